"""Diffusion-to-encoder warmup (LDLM App. A.2): gamma(s) is Eq. 30, and it scales only L_diff's encoder gradient."""

from __future__ import annotations

import math

import pytest
import torch
from ldlm_helpers import synthetic_batch, tiny_config, tiny_model

from ldlm.objectives.joint import JointTask
from ldlm.objectives.warmup import scale_encoder_gradient, warmup_gamma


def _paper_gamma(s, s_wu, k=10.0, c=0.8, g_min=0.0):
    sig = lambda x: 1 / (1 + math.exp(-k * (x / s_wu - c)))
    return g_min + (1 - g_min) * (sig(s) - sig(0)) / (sig(s_wu) - sig(0))


@pytest.mark.parametrize("s_wu", [10, 10_000, 25_000])
@pytest.mark.parametrize("g_min", [0.0, 0.05])
def test_gamma_is_the_normalised_sigmoid_of_eq_30(s_wu, g_min):
    for frac in (0.0, 0.1, 0.5, 0.8, 0.95, 1.0):
        s = round(frac * s_wu)
        assert warmup_gamma(s, s_wu, gamma_min=g_min) == pytest.approx(_paper_gamma(s, s_wu, g_min=g_min), abs=1e-12)
    assert warmup_gamma(0, s_wu, gamma_min=g_min) == pytest.approx(g_min)
    assert warmup_gamma(s_wu, s_wu, gamma_min=g_min) == pytest.approx(1.0)
    for s in (s_wu + 1, 2 * s_wu, 10**7):
        assert warmup_gamma(s, s_wu, gamma_min=g_min) == 1.0
    # k and c are used: the midpoint moves with c
    assert warmup_gamma(s_wu // 2, s_wu, c=0.5) > warmup_gamma(s_wu // 2, s_wu, c=0.8)


def test_no_warmup_when_s_wu_is_zero():
    assert all(warmup_gamma(s, 0) == 1.0 for s in (0, 1, 100))


def test_gamma_is_monotone_and_small_early():
    values = [warmup_gamma(s, 1000) for s in range(0, 1001, 50)]
    assert values == sorted(values)
    assert values[0] == 0.0 and warmup_gamma(400, 1000) < 0.05 < warmup_gamma(900, 1000)


def test_scaled_latents_keep_their_value_and_scale_the_gradient():
    z = torch.randn(3, 4, 5, requires_grad=True)
    weights = torch.randn(3, 4, 5)
    for gamma in (0.0, 0.3, 1.0):
        out = scale_encoder_gradient(z, gamma)
        assert torch.equal(out, z)  # bit-exact forward value
        (grad,) = torch.autograd.grad((out * weights).sum(), z)
        torch.testing.assert_close(grad, gamma * weights)


def _grads(cfg, model, batch, step):
    task = JointTask(model, cfg, seed=0).train()  # fresh generator and sampler: identical noise at every call
    diff = task.losses(batch, step)["diff"]
    encoder = list(model.autoencoder.compressor.parameters())
    denoiser = list(model.denoiser.parameters())
    grads = torch.autograd.grad(diff, encoder + denoiser)
    return diff.detach(), grads[: len(encoder)], grads[len(encoder) :]


def test_warmup_scales_the_encoder_gradient_of_l_diff_by_exactly_gamma():
    cfg = tiny_config("joint.warmup_steps=1000")
    model = tiny_model(cfg)
    batch = synthetic_batch(model)
    loss_full, enc_full, den_full = _grads(cfg, model, batch, step=5000)  # past S_wu: gamma = 1
    for step in (0, 700, 850):
        gamma = warmup_gamma(step, 1000)
        loss, enc, den = _grads(cfg, model, batch, step)
        assert torch.equal(loss, loss_full)  # the diffusion branch sees the same z0
        # equal up to float32 rounding of the backward pass (tolerance relative to each tensor's scale)
        for g, g_full in zip(enc, enc_full, strict=True):
            torch.testing.assert_close(g, gamma * g_full, rtol=1e-4, atol=1e-6 * g_full.abs().max().item())
        for g, g_full in zip(den, den_full, strict=True):  # the denoiser itself trains at full strength
            torch.testing.assert_close(g, g_full, rtol=1e-4, atol=1e-6 * g_full.abs().max().item())
    assert any(g.abs().max() > 0 for g in enc_full)  # the check above is not vacuous


def test_warmup_metric_is_logged():
    cfg = tiny_config("joint.warmup_steps=1000")
    model = tiny_model(cfg)
    task = JointTask(model, cfg, seed=0).train()
    _, metrics = task(synthetic_batch(model), 850)
    assert metrics["gamma"] == pytest.approx(warmup_gamma(850, 1000))
    assert {"loss", "diff", "mse", "ce", "latent_std"} <= set(metrics)
    # the drawn-t bands logged beside latent_std are the shares of this batch's t in [0, 0.2) and (0.5, 1]
    t = task._last_t
    assert metrics["t_below_02"] == pytest.approx((t < 0.2).float().mean().item())
    assert metrics["t_above_05"] == pytest.approx((t > 0.5).float().mean().item())
    assert 0 < metrics["t_below_02"] + metrics["t_above_05"] <= 1
