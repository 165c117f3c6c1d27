"""LDLM configuration: the paper presets, and bad combinations rejected before any training with the fields named."""

from __future__ import annotations

import pytest
from ldlm_helpers import tiny_config

from ldlm.config import ConfigError, load_config


def test_paper_presets_hold_the_papers_values():
    lm1b = load_config("ldlm_lm1b")
    assert lm1b.recipe == "ldlm" and lm1b.data.packing
    assert (lm1b.encoder.name, lm1b.encoder.layer, lm1b.encoder.max_length) == ("gpt2", -3, 128)
    assert lm1b.autoencoder.num_latents == 128 and lm1b.autoencoder.encoder_blocks == 6
    assert (lm1b.joint.warmup_steps, lm1b.joint.sigma_dec, lm1b.joint.reconstruction) == (25_000, 3.0, "mse")
    assert (lm1b.joint.warmup_k, lm1b.joint.warmup_c) == (10.0, 0.8)
    d = lm1b.diffusion
    assert (d.denoiser, d.layers, d.width, d.heads, d.schedule_d) == ("dit", 12, 768, 12, 3.0)
    assert (d.timestep_sampler, d.adaptive_bins, d.adaptive_refresh_every, d.self_condition_prob) == (
        "adaptive",
        100,
        5000,
        0.5,
    )
    t = lm1b.joint_train
    assert (t.lr, t.weight_decay, t.betas, t.eps, t.warmup_steps, t.lr_schedule, t.grad_clip, t.batch_size) == (
        3e-4,
        0.01,
        (0.9, 0.98),
        1e-8,
        5000,
        "constant",
        1.0,
        512,
    )
    assert lm1b.sample.sampler == "ddpm"  # the reverse SDE, stepped exactly in time (issue 21)
    owt = load_config("ldlm_owt")
    assert (owt.encoder.max_length, owt.autoencoder.num_latents, owt.joint.warmup_steps) == (1024, 1024, 50_000)
    ablation = load_config("ldlm_ablation")
    assert (ablation.joint.warmup_steps, ablation.joint.sigma_dec, ablation.encoder.max_length) == (10_000, 1.0, 128)
    assert ablation.data.dataset == "openwebtext" and ablation.joint_train.steps == 500_000
    assert load_config("ldlm_ablation_sdec3").joint.sigma_dec == 3.0
    # Table 1 rows are one override each
    assert load_config("ldlm_ablation", ["joint.reconstruction=ce"]).joint.reconstruction == "ce"


def test_quick_preset_matches_the_cosmos_quickstart_data_and_budget():
    quick, cosmos = load_config("ldlm_quick"), load_config("quickstart")
    # both fill every one of the 32 positions with news text: LDLM packs sentences, COSMOS diffuses article leads
    # (its autoencoder also reads the news sentences)
    assert quick.recipe == "ldlm" and quick.data.dataset == "news" and quick.data.packing
    assert cosmos.data.dataset == "news-articles" and "news" in cosmos.data.autoencoder_extra
    assert quick.encoder.name == "smollm2-135m" and quick.encoder.layer == -3
    assert quick.encoder.max_length == cosmos.encoder.max_length
    assert quick.joint_train.steps == cosmos.autoencoder_train.steps + cosmos.diffusion_train.steps


def _error(*overrides) -> str:
    with pytest.raises(ConfigError) as err:
        tiny_config(*overrides)
    return str(err.value)


def test_ce_while_the_token_decoder_is_skipped():
    for mode in ("ce", "ce+mse"):
        msg = _error(f"joint.reconstruction={mode}", "joint.skip_token_decoder=true", "decoder_train.steps=5")
        assert "joint.reconstruction" in msg and "joint.skip_token_decoder" in msg
    # skipping with the stop-gradient recipe is fine when the decoder is post-trained ...
    assert tiny_config("joint.skip_token_decoder=true", "decoder_train.steps=5").joint.skip_token_decoder
    # ... and an error when nothing would ever train it
    assert "decoder_train.steps" in _error("joint.skip_token_decoder=true", "decoder_train.steps=0")


def test_negative_warmup_and_decoder_noise():
    assert "joint.warmup_steps" in _error("joint.warmup_steps=-1")
    assert "joint.sigma_dec" in _error("joint.sigma_dec=-0.5")
    assert "joint.gamma_min" in _error("joint.gamma_min=1.5")
    assert tiny_config("joint.warmup_steps=0", "joint.sigma_dec=0").joint.warmup_steps == 0


def test_unknown_switch_values():
    assert "joint.reconstruction" in _error("joint.reconstruction=kl")
    assert "diffusion.timestep_sampler" in _error("diffusion.timestep_sampler=cosine")
    assert "autoencoder.latent_encoder" in _error("autoencoder.latent_encoder=lstm")
    assert "autoencoder.latent_norm" in _error("autoencoder.latent_norm=batchnorm")
    assert "recipe" in _error("recipe=ldlm2")
    assert "diffusion_train.eval_every" in _error("diffusion_train.eval_every=0")


def test_self_attention_encoder_needs_one_latent_per_token():
    msg = _error("autoencoder.latent_encoder=self_attention", "autoencoder.locality_bias=0")
    assert "autoencoder.num_latents" in msg and "encoder.max_length" in msg
    assert "autoencoder.locality_bias" in _error(
        "autoencoder.latent_encoder=self_attention", "autoencoder.num_latents=16"
    )


def test_extra_autoencoder_data_is_cosmos_only():
    assert "data.autoencoder_extra" in _error("data.autoencoder_extra=[rocstories]")
    assert "data.diffusion_full_window" in _error("data.diffusion_full_window=true")


def test_cosmos_configs_still_load_without_ldlm_keys():
    cfg = load_config("tiny")
    assert cfg.recipe == "cosmos" and cfg.autoencoder.token_decoder_layers == 0 and not cfg.data.packing
    assert cfg.decoder_train.steps == 0
