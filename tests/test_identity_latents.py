"""Identity latents (``autoencoder.latent_encoder=identity``, TEncDM-like): z = h, no E_z/D_h weights; the config
checks; and both recipes end to end (COSMOS stage 1 trains only D_w, LDLM joint training has no L_h), sampling and a
save/load round trip."""

from __future__ import annotations

import pytest
import torch
from ldlm_helpers import synthetic_batch, tiny_config, tiny_model

from ldlm.config import ConfigError, load_config
from ldlm.data.sources import normalized_features
from ldlm.model.autoencoder import IdentityResampler, TextAutoencoder
from ldlm.objectives.autoencoder import AutoencoderTask
from ldlm.objectives.joint import JointTask
from ldlm.pipeline import LatentDiffusionLM
from ldlm.recipes.cosmos import train_cosmos
from ldlm.recipes.ldlm import train_ldlm

TEXTS = ["the cat sat on the mat.", "rain fell over the quiet town all night."]
# tiny (COSMOS, L=24) and ldlm_tiny (LDLM, L=16) with identity latents: N = L, no locality prior
COSMOS = ("autoencoder.latent_encoder=identity", "autoencoder.num_latents=24", "autoencoder.locality_bias=0")
LDLM = ("autoencoder.latent_encoder=identity", "autoencoder.num_latents=16", "autoencoder.locality_bias=0")
FAST = {  # the end-to-end runs: fewer steps than the presets, a token decoder layer for COSMOS's D_w
    "cosmos": (
        "autoencoder.token_decoder_layers=1", "autoencoder.token_decoder_heads=4",
        "autoencoder_train.steps=10", "autoencoder_train.eval_every=10",
        "diffusion_train.steps=10", "diffusion_train.eval_every=10", "data.max_texts=160",
    ),
    "ldlm": ("joint_train.steps=10", "joint_train.eval_every=10", "joint_train.save_every=0", "data.max_texts=160"),
}  # fmt: skip


def _identity_ae(**kw) -> TextAutoencoder:
    cfg = tiny_config(*LDLM, *(f"autoencoder.{k}={v}" for k, v in kw.items()))
    return TextAutoencoder(cfg.autoencoder, hidden_size=32, max_length=16, vocab_size=50)


# ----------------------------------------------------------------------------- the module


def test_identity_latents_are_h_and_decode_hidden_is_z():
    ae = _identity_ae(token_decoder_layers=1, token_decoder_heads=4)
    assert isinstance(ae.compressor, IdentityResampler) and isinstance(ae.decompressor, IdentityResampler)
    assert ae.identity_latents and ae.latent_dim == 32  # d = the encoder's hidden size (not autoencoder.width=64)
    assert sum(p.numel() for p in [*ae.compressor.parameters(), *ae.decompressor.parameters()]) == 0
    assert len(list(ae.token_blocks.parameters())) > 0  # D_w is still a trained module
    h = torch.randn(2, 16, 32)
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 10:] = 0
    h[1, 10:] = 7.0  # padded positions are kept as they are
    z = ae.encode(h, mask)
    assert torch.equal(z, h)
    mean, logvar = ae.encode_distribution(h, mask)
    assert logvar is None and torch.equal(mean, h)
    assert torch.equal(ae.decode_hidden(z, 16), z) and torch.equal(ae.decode_hidden(z, 12), z[:, :12])
    assert ae.decode_tokens(z, 16).shape == (2, 16)
    with pytest.raises(ValueError, match="max_inputs"):
        ae.encode(torch.randn(1, 17, 32), torch.ones(1, 17))


def test_identity_resampler_rejects_what_it_cannot_be():
    with pytest.raises(ValueError, match="in_dim"):  # the VAE's 2d outputs, or another latent_dim
        IdentityResampler(num_queries=8, max_inputs=8, in_dim=4, out_dim=8)
    with pytest.raises(ValueError, match="keeps its length"):
        IdentityResampler(num_queries=4, max_inputs=8, in_dim=4, out_dim=4)
    with pytest.raises(ValueError, match="locality_bias"):
        IdentityResampler(num_queries=8, max_inputs=8, in_dim=4, out_dim=4, locality_bias=5.0)


# ----------------------------------------------------------------------------- config checks


def _error(preset: str, *overrides: str) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(preset, list(overrides))
    return str(err.value)


@pytest.mark.parametrize("preset, base", [("tiny", COSMOS), ("ldlm_tiny", LDLM)])
def test_identity_config_checks_name_the_field(preset, base):
    assert load_config(preset, [*base, "autoencoder.token_decoder_layers=1"]).autoencoder.latent_encoder == "identity"
    msg = _error(preset, *base, "autoencoder.num_latents=8")
    assert "autoencoder.num_latents=8" in msg and "encoder.max_length" in msg
    assert "autoencoder.locality_bias" in _error(preset, *base, "autoencoder.locality_bias=5.0")
    assert "autoencoder.kl_weight" in _error(preset, *base, "autoencoder.kl_weight=0.01")
    assert "autoencoder.latent_dim" in _error(preset, *base, "autoencoder.latent_dim=32")
    assert "perceiver | self_attention | identity" in _error(preset, "autoencoder.latent_encoder=idem")


def test_identity_cosmos_stage1_must_have_something_to_train():
    msg = _error("tiny", *COSMOS, "autoencoder.freeze_head_steps=100")
    assert "autoencoder.freeze_head_steps" in msg and "autoencoder.token_decoder_layers" in msg
    load_config("tiny", [*COSMOS, "autoencoder.freeze_head_steps=100", "autoencoder.token_decoder_layers=1"])
    assert "autoencoder.ce_weight" in _error("tiny", *COSMOS, "autoencoder.ce_weight=0")
    # the LDLM joint stage always trains the denoiser: a frozen head is fine there
    load_config("ldlm_tiny", [*LDLM, "autoencoder.freeze_head_steps=100", "autoencoder.token_decoder_layers=0"])


# ----------------------------------------------------------------------------- the objectives


def test_cosmos_stage1_trains_only_the_token_decoder_on_perturbed_h():
    cfg = load_config("tiny", [*COSMOS, "autoencoder.token_decoder_layers=1", "autoencoder.token_decoder_heads=4"])
    model = tiny_model(cfg)
    task = AutoencoderTask(model, seed=0).train()
    loss, metrics = task(synthetic_batch(model), step=10**6)
    assert "mse" not in metrics and loss.item() == pytest.approx(metrics["ce"])  # MSE(h, h_hat) trains nothing
    loss.backward()
    ae = model.autoencoder
    assert ae.head.weight.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ae.token_blocks.parameters())


def test_ldlm_joint_objective_has_no_latent_reconstruction_and_noisy_decoder_input():
    cfg = tiny_config(*LDLM, "joint.sigma_dec=3.0")
    model = tiny_model(cfg)
    task = JointTask(model, cfg, seed=0).train()
    batch = synthetic_batch(model)
    terms = task.losses(batch, step=10**6)
    assert set(terms) == {"diff", "ce"}  # L_h = 0: no E_z/D_h weights
    (terms["diff"] + terms["ce"]).backward()
    assert all(p.grad is not None for p in model.denoiser.parameters())
    assert model.autoencoder.head.weight.grad.abs().sum() > 0
    _, _, h = task.features(batch, torch.device("cpu"))
    noisy = model.autoencoder.decode_hidden(task.decoder_input(model.autoencoder.encode(h, None)), h.shape[1])
    assert (noisy - h).std().item() == pytest.approx(3.0, rel=0.05)  # D_w sees z + sigma_dec eps


# ----------------------------------------------------------------------------- both recipes end to end


@pytest.mark.parametrize("recipe", ["cosmos", "ldlm"])
def test_identity_recipe_end_to_end(recipe, tmp_path):
    preset, base = ("tiny", COSMOS) if recipe == "cosmos" else ("ldlm_tiny", LDLM)
    cfg = load_config(preset, [*base, *FAST[recipe], f"output_dir={tmp_path}/{{name}}"])
    train = train_cosmos if recipe == "cosmos" else train_ldlm
    model, summary = train(cfg, progress=False)  # its own encoder: fitting its statistics leaves the shared one alone
    length, hidden = cfg.encoder.max_length, model.encoder.hidden_size
    assert model.latent_shape == (length, hidden)
    assert summary["heldout_mse"] == 0.0  # h_hat = h on clean inputs
    assert summary["heldout_token_accuracy"] == summary["heldout_head_accuracy_true_h"]  # ... so no token is lost
    # the diffusion latents are the normalised features themselves (no latent statistics on top)
    assert torch.equal(model.latent_mean, torch.zeros(length, hidden))
    assert torch.equal(model.latent_std, torch.ones(length, hidden))
    ids, mask = model.tokenize(TEXTS)
    with torch.no_grad():
        h = model.features(ids, mask)
    z = model.encode(TEXTS)
    assert torch.equal(z, h)
    latents = model.generate_latents(2, steps=3, seed=0)
    assert latents.shape == (2, length, hidden)
    texts = model.decode(latents)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    reloaded = LatentDiffusionLM.from_pretrained(model.save_pretrained(tmp_path / "saved"))
    assert reloaded.autoencoder.identity_latents
    assert torch.equal(reloaded.encode(TEXTS), z)
    assert torch.equal(reloaded.generate_latents(2, steps=3, seed=0), latents)
    assert reloaded.generate(2, steps=3, seed=0) == texts


def test_accuracy_on_true_h_isolates_the_latent_bottleneck():
    """reconstruction_accuracy(true_h=True): the decoder's accuracy on h, beside the one on h_hat = D_h(E_z(h))."""
    from ldlm.data.sources import FeatureSource
    from ldlm.objectives.autoencoder import reconstruction_accuracy

    cfg = load_config("tiny", [])
    model = LatentDiffusionLM(cfg)
    source = FeatureSource(model, TEXTS, cache=False)
    ae = model.autoencoder
    with torch.no_grad():  # make D_h useless (h_hat = 0): every token the head reads right from h is lost in it
        for p in ae.decompressor.parameters():
            p.zero_()
    ids, mask, h = normalized_features(model, source.batch(torch.arange(len(TEXTS))), torch.device("cpu"))
    ae.head.weight.data[:] = 0
    ae.head.bias.data[:] = 0
    real = mask.bool()
    ae.head.weight.data[ids[real]] = h[real]  # a head that reads each text's own tokens back from h
    rec = reconstruction_accuracy(model, source, true_h=True)
    assert rec["acc_true_h"] > 0.5 > rec["acc"]
    assert "acc_true_h" not in reconstruction_accuracy(model, source)
