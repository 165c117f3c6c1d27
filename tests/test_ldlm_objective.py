"""The joint objective L = L_diff + L_h + L_w (LDLM Eq. 2-4): which term reaches which module, decoder noise,
Table 1's reconstruction switches, token-decoder post-training and the self-attention latent encoder."""

from __future__ import annotations

import json

import pytest
import torch
from ldlm_helpers import synthetic_batch, tiny_config, tiny_model
from safetensors.torch import load_file

from ldlm.config import load_config
from ldlm.model.autoencoder import TextAutoencoder
from ldlm.model.transformer import TransformerBlock
from ldlm.objectives.decoder import DecoderTask
from ldlm.objectives.joint import JointTask

GPT2_HIDDEN, GPT2_VOCAB = 768, 50257  # GPT-2 small, the paper's E_h (not downloaded: the sizes are enough)
D_W = ("autoencoder.token_blocks.", "autoencoder.head.")


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


def test_paper_token_decoder_is_three_transformer_blocks_then_a_linear_head():
    """LDLM App. B.2 / ldlm_lm1b: D_w = 3 transformer layers + a linear head over the vocabulary, at GPT-2's width
    (built on the meta device: shapes and wiring only, no weights allocated)."""
    cfg = load_config("ldlm_lm1b")
    assert cfg.autoencoder.token_decoder_layers == 3
    with torch.device("meta"):
        ae = TextAutoencoder(
            cfg.autoencoder, hidden_size=GPT2_HIDDEN, max_length=cfg.encoder.max_length, vocab_size=GPT2_VOCAB
        )
        assert len(ae.token_blocks) == 3 and all(type(b) is TransformerBlock for b in ae.token_blocks)
        assert type(ae.head) is torch.nn.Linear
        assert (ae.head.in_features, ae.head.out_features) == (GPT2_HIDDEN, GPT2_VOCAB)
        calls = []  # (module, its input, its output) in call order
        for m in (*ae.token_blocks, ae.head):
            m.register_forward_hook(lambda mod, args, out: calls.append((mod, args[0], out)))
        h_hat = torch.randn(2, cfg.encoder.max_length, GPT2_HIDDEN)
        logits = ae.logits(h_hat, torch.ones(2, cfg.encoder.max_length, dtype=torch.long))
    assert [c[0] for c in calls] == [*ae.token_blocks, ae.head]  # the blocks in order, then the head, once each
    assert calls[0][1] is h_hat and calls[-1][2] is logits
    assert all(calls[i + 1][1] is calls[i][2] for i in range(3))  # each reads the previous one's output directly
    assert logits.shape == (2, cfg.encoder.max_length, GPT2_VOCAB)


@pytest.mark.parametrize("mode", ["mse", "ce", "ce+mse"])
def test_token_decoder_reads_h_hat_stop_gradient_only_in_mse_mode(mode):
    """L_w's input is D_h's output h_hat (not the true h): sg(h_hat) with reconstruction=mse, h_hat itself with
    Table 1's CE ablations."""
    cfg = tiny_config(f"joint.reconstruction={mode}")
    model = tiny_model(cfg)
    ae = model.autoencoder
    seen = {}
    ae.decompressor.register_forward_hook(lambda mod, args, out: seen.setdefault("h_hat", out))
    ae.token_blocks[0].register_forward_hook(lambda mod, args, out: seen.setdefault("d_w_input", args[0]))
    JointTask(model, cfg, seed=0).train().losses(synthetic_batch(model), 10**6)
    h_hat, d_w_input = seen["h_hat"], seen["d_w_input"]
    assert h_hat.requires_grad and torch.equal(d_w_input, h_hat)
    if mode == "mse":
        assert not d_w_input.requires_grad  # detached: sg(h_hat)
    else:
        assert d_w_input is h_hat


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


@pytest.mark.parametrize("sigma", [0.5, 1.0, 3.0])
def test_decoder_noise_is_z0_plus_sigma_dec_eps(sigma):
    """z~0 = z0 + sigma_dec eps with eps ~ N(0, I) from the task's generator: the noise std scales with sigma_dec."""
    cfg = tiny_config(f"joint.sigma_dec={sigma}")
    task = JointTask(tiny_model(cfg), cfg, seed=0).train()
    z = torch.randn(64, 4, 64)
    eps = torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
    noisy = task.decoder_input(z)
    torch.testing.assert_close(noisy, z + sigma * eps)
    assert (noisy - z).std().item() == pytest.approx(sigma, rel=0.05)
    assert not torch.equal(task.decoder_input(z), noisy)  # fresh noise at every step


def test_sigma_dec_zero_trains_on_the_clean_latent():
    """sigma_dec=0: L_h in training equals L_h on the clean z0 (eval mode), in the joint objective end to end."""
    cfg = tiny_config("joint.sigma_dec=0")
    model = tiny_model(cfg)
    batch = synthetic_batch(model)
    train = JointTask(model, cfg, seed=0).train().losses(batch, 0)["mse"]
    clean = JointTask(model, cfg, seed=0).eval().losses(batch, 0)["mse"]
    assert torch.equal(train, clean)


def test_post_training_noise_in_training_only():
    """App. B.2's D_w post-training sees D_h(z0 + sigma_dec eps) in training, the clean path in eval mode."""
    model = tiny_model(tiny_config())
    batch = synthetic_batch(model)

    def ce(sigma: float, train: bool) -> torch.Tensor:
        return DecoderTask(model, tiny_config(f"joint.sigma_dec={sigma}"), seed=0).train(train)(batch, 10**6)[0]

    clean = ce(3.0, train=False)
    assert torch.equal(ce(0.0, train=True), clean) and torch.equal(ce(0.0, train=False), clean)
    assert not torch.isclose(ce(3.0, train=True), clean)


def test_post_training_clean_fraction_decodes_those_texts_from_clean_z():
    """``joint.decoder_clean_fraction``: 1 decodes every text from the clean z0 (the eval path) in training, 0 none
    (the paper), and a fraction in between noises only some of the batch's texts."""
    model = tiny_model(tiny_config())
    batch = synthetic_batch(model)

    def ce(fraction: float, train: bool = True) -> torch.Tensor:
        cfg = tiny_config("joint.sigma_dec=3", f"joint.decoder_clean_fraction={fraction}")
        return DecoderTask(model, cfg, seed=0).train(train)(batch, 10**6)[0]

    clean, noisy, half = ce(1.0, train=False), ce(0.0), ce(0.5)
    assert torch.equal(ce(1.0), clean)
    assert not torch.isclose(noisy, clean) and not torch.isclose(half, clean) and not torch.isclose(half, noisy)
    with pytest.raises(ValueError, match="decoder_clean_fraction"):
        tiny_config("joint.decoder_clean_fraction=1.5")


def test_post_training_path_trains_only_d_w_and_raises_heldout_accuracy(tmp_path, monkeypatch):
    """LDLM App. B.2 end to end: a joint stage with ``joint.skip_token_decoder=true`` (no L_w, D_w untrained), stopped
    before the post-training, then ``--resume`` with ``decoder_train.steps > 0``: the joint stage is restored, only
    D_w trains (every other weight bit-identical), and held-out token accuracy rises."""
    from ldlm import cli
    from ldlm.objectives.autoencoder import reconstruction_accuracy
    from ldlm.recipes import ldlm as ldlm_recipe

    before = {}

    def stop_before_post_training(model, train, valid, cfg, run_dir, progress=True):
        before["state"] = {k: v.detach().clone() for k, v in model.trained_state_dict().items()}
        before.update(reconstruction_accuracy(model, valid, max_texts=len(valid), true_h=True))
        raise KeyboardInterrupt("stopped before the post-training")

    # N = L latents without decoder noise: the only tiny setting whose latents carry tokens after 20 steps
    args = [
        "train", "ldlm_tiny", f"output_dir={tmp_path}/{{name}}", "joint.skip_token_decoder=true",
        "autoencoder.num_latents=16", "joint.sigma_dec=0", "joint_train.steps=20", "joint_train.save_every=0",
        "decoder_train.steps=30", "decoder_train.save_every=0", "--quiet",
    ]  # fmt: skip
    with monkeypatch.context() as m:
        m.setattr(ldlm_recipe, "train_token_decoder", stop_before_post_training)
        with pytest.raises(KeyboardInterrupt):
            cli.main(args)
    assert cli.main([*args, "--resume"]) == 0
    run = tmp_path / "ldlm_tiny"
    after = load_file(str(run / "model" / "model.safetensors"))
    assert set(after) == set(before["state"])
    for key, value in before["state"].items():
        if key.startswith(D_W):
            assert not torch.equal(after[key], value), key  # the fresh D_w trained
        else:
            torch.testing.assert_close(after[key], value, rtol=0, atol=0, msg=key)  # E_z, D_h, denoiser, stats
    summary = json.loads((run / "summary.json").read_text())
    assert summary["heldout_token_accuracy"] > before["acc"] + 0.05  # through z (measured: 0.0 -> 0.12)
    assert summary["heldout_head_accuracy_true_h"] > before["acc_true_h"] + 0.3  # D_w on the true h (~0 -> 0.64)
    # train_minutes counts the joint stage that the first call trained, not only the resumed call's wall time
    stages = summary["feature_minutes"] + summary["joint_minutes"] + summary["decoder_minutes"]
    assert summary["joint_minutes"] > 0 and summary["train_minutes"] == pytest.approx(stages, abs=2e-5)


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


def test_layernorm_latents_have_a_scale_no_loss_can_change():
    """autoencoder.latent_norm=layernorm: every z_i has zero mean and unit variance over d, whatever E_z's output
    scale, so the diffusion loss cannot shrink z under sigma_dec noise (issue 22); none keeps E_z's raw scale."""
    raw = tiny_model(tiny_config())
    normed = tiny_model(tiny_config("autoencoder.latent_norm=layernorm"))
    normed.autoencoder.load_state_dict(raw.autoencoder.state_dict())
    h, mask = torch.randn(3, 8, raw.encoder.hidden_size), torch.ones(3, 8)
    z = normed.autoencoder.encode(h, mask)
    torch.testing.assert_close(z.mean(-1), torch.zeros(z.shape[:-1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.var(-1, unbiased=False), torch.ones(z.shape[:-1]), atol=1e-3, rtol=0)
    for model in (raw, normed):  # shrink E_z's last projection 10x: only the raw latents follow
        last = [p for n, p in model.autoencoder.compressor.named_parameters() if p.dim() == 2][-1]
        with torch.no_grad():
            before = model.autoencoder.encode(h, mask)
            last.mul_(0.1)
            after = model.autoencoder.encode(h, mask)
        ratio = (after.std() / before.std()).item()
        assert ratio == pytest.approx(1.0, abs=1e-3) if model is normed else ratio < 0.5
