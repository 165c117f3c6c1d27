"""The joint objective L = L_diff + L_h + L_w (LDLM Eq. 2-4): which term reaches which module, decoder noise,
Table 1's reconstruction switches, token-decoder post-training and the self-attention latent encoder."""

from __future__ import annotations

import pytest
import torch
from ldlm_helpers import synthetic_batch, tiny_config, tiny_model

from ldlm.model.autoencoder import TextAutoencoder
from ldlm.objectives.decoder import DecoderTask
from ldlm.objectives.joint import JointTask


def _grad_norm(loss, params) -> float:
    grads = torch.autograd.grad(loss, list(params), allow_unused=True, retain_graph=True)
    return sum(0.0 if g is None else g.abs().sum().item() for g in grads)


def _terms(*overrides, step=10**6, train=True):
    cfg = tiny_config(*overrides)
    model = tiny_model(cfg)
    task = JointTask(model, cfg, seed=0).train(train)
    return model, task.losses(synthetic_batch(model), step)


def test_token_loss_sends_no_gradient_to_the_latent_encoder():
    model, terms = _terms("joint.reconstruction=mse")
    ae = model.autoencoder
    assert set(terms) == {"diff", "mse", "ce"}
    assert _grad_norm(terms["ce"], ae.compressor.parameters()) == 0.0  # sg(h_hat): L_w never shapes z
    assert _grad_norm(terms["ce"], ae.decompressor.parameters()) == 0.0
    assert _grad_norm(terms["ce"], ae.head.parameters()) > 0  # ... but trains the token decoder
    assert _grad_norm(terms["ce"], ae.token_blocks.parameters()) > 0
    assert _grad_norm(terms["mse"], ae.compressor.parameters()) > 0  # L_h is the encoder's reconstruction signal
    assert _grad_norm(terms["mse"], ae.head.parameters()) == 0.0


@pytest.mark.parametrize("mode, expected", [("ce", {"diff", "ce"}), ("ce+mse", {"diff", "mse", "ce"})])
def test_table1_ce_ablations_turn_the_stop_gradient_off(mode, expected):
    model, terms = _terms(f"joint.reconstruction={mode}")
    assert set(terms) == expected
    assert _grad_norm(terms["ce"], model.autoencoder.compressor.parameters()) > 0


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ((), 16 * 384 / (4 * 64)),  # ldlm_tiny: L x D = 16 x 384 features, N x d = 4 x 64 latents
        (("autoencoder.num_latents=16", "autoencoder.latent_dim=384"), 1.0),  # the paper's N = L, d = D
        (("joint.hidden_weight=2.5",), 2.5),
    ],
)
def test_hidden_loss_weight_restores_the_squared_norm_balance_and_weights_only_l_h(overrides, expected):
    cfg = tiny_config(*overrides)
    model = tiny_model(cfg)
    task = JointTask(model, cfg, seed=0).train()
    assert task.hidden_weight == pytest.approx(expected)
    batch = synthetic_batch(model)
    terms = task.losses(batch, 10**6)
    task.generator.manual_seed(0)  # forward draws the same noise, t and positions as losses() did
    loss, metrics = task(batch, 10**6)
    assert loss.item() == pytest.approx(terms["diff"].item() + expected * terms["mse"].item() + terms["ce"].item())
    assert metrics["mse"] == pytest.approx(terms["mse"].item())  # logged unweighted


def test_hidden_weight_must_be_positive():
    with pytest.raises(ValueError, match="joint.hidden_weight=0.0"):
        tiny_config("joint.hidden_weight=0")


def test_skipped_token_decoder_has_no_loss_and_no_trainable_weights():
    cfg = tiny_config("joint.skip_token_decoder=true")
    model = tiny_model(cfg)
    task = JointTask(model, cfg, seed=0).train()
    assert set(task.losses(synthetic_batch(model), 0)) == {"diff", "mse"}
    assert not any(p.requires_grad for p in model.autoencoder.head.parameters())
    assert not any(p.requires_grad for p in model.autoencoder.token_blocks.parameters())


def test_decoder_noise_in_training_only():
    cfg = tiny_config("joint.sigma_dec=3.0")
    model = tiny_model(cfg)
    task = JointTask(model, cfg, seed=0)
    z = torch.randn(64, 4, 64)
    noisy = task.train().decoder_input(z)
    assert (noisy - z).std().item() == pytest.approx(3.0, rel=0.05)
    assert torch.equal(task.eval().decoder_input(z), z)
    # L_h reads the noisy latents in training, the clean ones in eval mode
    batch = synthetic_batch(model)
    mse_train = JointTask(model, cfg, seed=0).train().losses(batch, 0)["mse"]
    mse_eval = JointTask(model, cfg, seed=0).eval().losses(batch, 0)["mse"]
    assert not torch.isclose(mse_train, mse_eval)
    # sampling decodes the clean latent: decoding is deterministic and equals the noiseless path
    model.eval()
    latents = torch.randn(2, *model.latent_shape)
    ids = model.decode_ids(latents)
    assert torch.equal(ids, model.decode_ids(latents))
    expected = model.autoencoder.logits(model.autoencoder.decode_hidden(latents, model.max_length)).argmax(-1)
    assert torch.equal(ids, expected)


def test_sigma_dec_zero_is_the_identity():
    cfg = tiny_config("joint.sigma_dec=0")
    task = JointTask(tiny_model(cfg), cfg, seed=0).train()
    z = torch.randn(2, 4, 64)
    assert torch.equal(task.decoder_input(z), z)


def test_post_training_trains_only_a_fresh_token_decoder():
    cfg = tiny_config()
    model = tiny_model(cfg)
    ae = model.autoencoder
    old_head = ae.head.weight.detach().clone()
    ae.new_token_decoder()
    assert not torch.equal(ae.head.weight, old_head) and len(ae.token_blocks) == cfg.autoencoder.token_decoder_layers
    ae.requires_grad_(False)
    ae.token_blocks.requires_grad_(True)
    ae.head.requires_grad_(True)
    loss, metrics = DecoderTask(model, cfg, seed=0).train()(synthetic_batch(model), 0)
    loss.backward()
    assert set(metrics) == {"loss", "ce"}
    assert all(p.grad is None for p in ae.compressor.parameters())
    assert all(p.grad is None for p in ae.decompressor.parameters())
    assert all(p.grad is None for p in model.denoiser.parameters())
    assert ae.head.weight.grad.abs().sum() > 0 and all(p.grad is not None for p in ae.token_blocks.parameters())


def test_self_attention_latent_encoder():
    cfg = tiny_config(
        "autoencoder.latent_encoder=self_attention", "autoencoder.num_latents=16", "autoencoder.locality_bias=0"
    )
    ae = TextAutoencoder(cfg.autoencoder, hidden_size=32, max_length=16, vocab_size=50)
    assert type(ae.compressor).__name__ == "SelfAttentionResampler"
    h = torch.randn(2, 16, 32)
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 10:] = 0
    z = ae.encode(h, mask)
    assert z.shape == (2, 16, 64)  # one latent per token (App. B.4)
    assert ae.decode_hidden(z, 16).shape == (2, 16, 32)
    # padded positions are masked out of the attention: changing them leaves the real positions' latents alone
    h2 = h.clone()
    h2[1, 10:] = 100.0
    torch.testing.assert_close(ae.encode(h2, mask)[1, :10], z[1, :10])
    assert not torch.allclose(ae.encode(h2, torch.ones_like(mask))[1, :10], z[1, :10])


def test_token_decoder_blocks_respect_padding():
    cfg = tiny_config()
    ae = TextAutoencoder(cfg.autoencoder, hidden_size=32, max_length=16, vocab_size=50)
    h = torch.randn(1, 16, 32)
    mask = torch.ones(1, 16, dtype=torch.long)
    mask[0, 12:] = 0
    h2 = h.clone()
    h2[0, 12:] = -50.0
    torch.testing.assert_close(ae.logits(h2, mask)[0, :12], ae.logits(h, mask)[0, :12])
