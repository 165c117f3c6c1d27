"""Gaussian latent diffusion: tan schedule, VP rate, forward noising, samplers, loss, self-conditioning."""

from __future__ import annotations

import math

import pytest
import torch

from ldlm.config import SAMPLER_NAMES, DiffusionConfig
from ldlm.diffusion import SAMPLERS, build_denoiser, build_schedule, diffusion_loss, sample_latents
from ldlm.diffusion.schedule import CosineSchedule, TanSchedule
from ldlm.diffusion.timesteps import build_timestep_sampler
from ldlm.sampling.samplers import time_grid


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- schedule


@pytest.mark.parametrize("d", [1.0, 3.0, 5.0, 9.0])
def test_tan_schedule_values(d):
    s = TanSchedule(d, t_max=0.999)
    assert s.alpha(torch.tensor(0.0)).item() == 1.0
    assert s.alpha(torch.tensor(0.5, dtype=torch.float64)).item() == pytest.approx(1 / (1 + d**2), rel=1e-12)
    t = torch.tensor([0.1, 0.3, 0.7, 0.9], dtype=torch.float64)
    expected = 1 / (1 + d**2 * torch.tan(math.pi * t / 2) ** 2)
    torch.testing.assert_close(s.alpha(t), expected)


def test_tan_schedule_larger_d_is_noisier():
    t = torch.linspace(0.05, 0.95, 19)
    assert (TanSchedule(9.0).alpha(t) < TanSchedule(3.0).alpha(t)).all()


def test_tan_schedule_monotone_and_clipped():
    s = TanSchedule(5.0, t_max=0.99)
    t = torch.linspace(0, 0.99, 500, dtype=torch.float64)
    a = s.alpha(t)
    assert (a[1:] < a[:-1]).all()
    assert (a > 0).all() and a[-1] < 1e-3
    beyond = s.alpha(torch.tensor([0.99, 0.995, 1.0], dtype=torch.float64))
    assert torch.isfinite(beyond).all() and (beyond == beyond[0]).all()  # clipped at t_max
    assert torch.isfinite(s.beta(torch.tensor([1.0]))).all()


@pytest.mark.parametrize("schedule", [TanSchedule(5.0), TanSchedule(3.0), CosineSchedule()])
def test_beta_is_minus_dlogalpha_dt(schedule):
    t = torch.linspace(0.02, 0.97, 40, dtype=torch.float64)
    h = 1e-6
    fd = -(schedule.alpha(t + h).log() - schedule.alpha(t - h).log()) / (2 * h)
    torch.testing.assert_close(schedule.beta(t), fd, rtol=1e-5, atol=1e-6)
    assert (schedule.beta(t) > 0).all()


def test_build_schedule():
    assert isinstance(build_schedule("tan", 7.0, 0.99), TanSchedule)
    assert build_schedule("tan", 7.0, 0.99).d == 7.0 and build_schedule("tan", 7.0, 0.99).t_max == 0.99
    assert isinstance(build_schedule("cosine", 7.0, 0.99), CosineSchedule)
    with pytest.raises(ValueError, match="linear"):
        build_schedule("linear", 1.0, 0.99)


def test_add_noise_formula():
    s = TanSchedule(5.0)
    z0, eps = torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    t = torch.tensor([0.0, 0.5, 0.9])
    zt = s.add_noise(z0, t, eps)
    for i in range(3):
        a = s.alpha(t[i])
        torch.testing.assert_close(zt[i], a.sqrt() * z0[i] + (1 - a).sqrt() * eps[i])
    torch.testing.assert_close(zt[0], z0[0])  # t = 0: clean


def test_uniform_timesteps():
    ts = build_timestep_sampler("uniform", 0.99)
    t = ts.sample(20000, _gen())
    assert t.shape == (20000,) and t.min() >= 0 and t.max() < 0.99
    assert abs(t.mean().item() - 0.495) < 0.01
    with pytest.raises(ValueError):
        build_timestep_sampler("adaptive-typo", 0.99)


# ----------------------------------------------------------------------------- samplers


def _gaussian_oracle(schedule, mu, sigma):
    """E[x0 | z_t] for x0 ~ N(mu, sigma^2): mu + sigma^2 sqrt(a) / (a sigma^2 + 1 - a) (z_t - sqrt(a) mu)."""

    def denoise(z, t, x0_prev):
        a = schedule.alpha(t).view(-1, *([1] * (z.dim() - 1)))
        return mu + sigma**2 * a.sqrt() / (a * sigma**2 + 1 - a) * (z - a.sqrt() * mu)

    return denoise


@pytest.mark.parametrize("sampler", ["euler", "euler_maruyama", "ddim", "ddpm"])
@pytest.mark.parametrize("mu, sigma", [(0.7, 0.5), (-1.0, 1.5)])
def test_samplers_recover_gaussian_data(sampler, mu, sigma):
    s = TanSchedule(5.0, t_max=0.999)
    x = sample_latents(_gaussian_oracle(s, mu, sigma), s, (4000, 1), steps=200, sampler=sampler, generator=_gen())
    assert x.shape == (4000, 1)
    assert abs(x.mean().item() - mu) < 0.05
    assert abs(x.std().item() - sigma) < 0.05


def test_sampler_registry():
    assert set(SAMPLERS) == {"euler", "euler_maruyama", "ddim", "ddpm", "dpmpp_2m"} == set(SAMPLER_NAMES)
    with pytest.raises(ValueError, match="heun"):
        sample_latents(lambda z, t, x: z, TanSchedule(5.0), (2, 1), steps=2, sampler="heun")
    with pytest.raises(ValueError, match="steps"):
        sample_latents(lambda z, t, x: z, TanSchedule(5.0), (2, 1), steps=0)


@pytest.mark.parametrize("sampler", ["euler", "euler_maruyama", "ddim", "ddpm"])
def test_sampling_is_seeded(sampler):
    s = TanSchedule(5.0)
    oracle = _gaussian_oracle(s, 0.3, 0.8)
    run = lambda seed: sample_latents(oracle, s, (16, 2, 3), steps=20, sampler=sampler, generator=_gen(seed))
    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def _state_std_after_first_step(sampler: str, steps: int) -> float:
    """Std of z after one step from z ~ N(0, I) at t_max, on N(0, 1) data with the exact denoiser E[x0 | z_t]."""
    s = TanSchedule(5.0, t_max=0.999)
    oracle = _gaussian_oracle(s, 0.0, 1.0)
    z = torch.randn(20_000, 1, generator=_gen(3))
    t, t_next = torch.tensor(s.t_max), torch.tensor(s.t_max * (1 - 1 / steps))
    return (
        SAMPLERS[sampler](
            s, z, oracle(z, t.expand(z.shape[0]), None), t, t_next, torch.randn(z.shape, generator=_gen(4))
        )
        .std()
        .item()
    )


@pytest.mark.parametrize("steps", [32, 200])
def test_ddpm_first_step_keeps_the_state_at_unit_std(steps):
    """The DDPM posterior step is exact in time: the marginal stays N(0, 1) on N(0, 1) data (issue 21, item 3)."""
    assert abs(_state_std_after_first_step("ddpm", steps) - 1.0) < 0.05


@pytest.mark.parametrize("steps, at_least", [(32, 20.0), (200, 4.0)])
def test_euler_maruyama_first_step_overshoots_under_the_tan_schedule(steps, at_least):
    """The defect ddpm fixes: beta(t_max) dt is ~10-62, so Euler-Maruyama throws the state far from unit std."""
    assert _state_std_after_first_step("euler_maruyama", steps) > at_least


def test_ddpm_is_stochastic_and_ends_on_the_mean():
    """Fresh noise at every step but the last: two seeds differ; the final state is x0_hat at t = 0."""
    s = TanSchedule(5.0)
    oracle = _gaussian_oracle(s, 0.0, 1.0)
    z = torch.randn(64, 4)
    runs = [sample_latents(oracle, s, z.shape, steps=20, sampler="ddpm", z_init=z, generator=_gen(i)) for i in (0, 1)]
    assert not torch.allclose(runs[0], runs[1])
    x0 = torch.randn(5, 3)
    torch.testing.assert_close(
        SAMPLERS["ddpm"](s, torch.randn(5, 3), x0, torch.tensor(0.1), torch.tensor(0.0), None), x0
    )


def test_euler_maruyama_is_stochastic_given_the_start():
    s = TanSchedule(5.0)
    oracle = _gaussian_oracle(s, 0.0, 1.0)
    z = torch.randn(64, 4)
    em = [
        sample_latents(oracle, s, z.shape, steps=20, sampler="euler_maruyama", z_init=z, generator=_gen(i))
        for i in (0, 1)
    ]
    assert not torch.allclose(em[0], em[1])
    ode = [sample_latents(oracle, s, z.shape, steps=20, sampler="euler", z_init=z, generator=_gen(i)) for i in (0, 1)]
    assert torch.equal(ode[0], ode[1])  # the probability-flow ODE is deterministic given z_1


@pytest.mark.parametrize("steps", [1, 7])
@pytest.mark.parametrize("sampler", ["euler", "euler_maruyama", "ddim", "ddpm", "dpmpp_2m"])
def test_any_step_count_works(steps, sampler):
    s = TanSchedule(5.0)
    calls = []

    def denoise(z, t, x0_prev):
        calls.append(t[0].item())
        return _gaussian_oracle(s, 0.5, 0.5)(z, t, x0_prev)

    x = sample_latents(denoise, s, (8, 3, 2), steps=steps, sampler=sampler, generator=_gen())
    assert x.shape == (8, 3, 2) and torch.isfinite(x).all()
    assert len(calls) == steps  # one denoiser call (NFE) per step
    assert calls[0] == pytest.approx(s.t_max)
    if sampler == "dpmpp_2m":  # uniform in lambda = log(sqrt(alpha) / sqrt(1 - alpha)) (tests/test_dpm_solver.py)
        expected_grid = time_grid(s, sampler, steps, s.t_max)[:-1]
        if steps > 1:
            lam = s.lambda_t(torch.tensor(calls, dtype=torch.float64))
            torch.testing.assert_close(lam.diff(), lam.diff()[:1].expand(steps - 1), rtol=1e-4, atol=0)
    else:
        expected_grid = torch.linspace(s.t_max, 0, steps + 1)[:-1]
    torch.testing.assert_close(torch.tensor(calls), expected_grid)


def test_sampler_feeds_previous_x0_estimate():
    """Self-conditioning at sampling time: every call after the first receives the previous output."""
    s = TanSchedule(5.0)
    received, returned = [], []

    def denoise(z, t, x0_prev):
        received.append(None if x0_prev is None else x0_prev.clone())
        out = torch.randn(z.shape)
        returned.append(out)
        return out

    final = sample_latents(denoise, s, (4, 2, 3), steps=5, generator=_gen())
    assert received[0] is None
    for i in range(1, 5):
        assert torch.equal(received[i], returned[i - 1])
    assert torch.equal(final, returned[-1])  # the result is the final x0 estimate


def test_sampler_starts_from_standard_normal_noise():
    s = TanSchedule(5.0)
    starts = []

    def denoise(z, t, x0_prev):
        if not starts:
            starts.append(z.clone())
        return torch.zeros_like(z)

    sample_latents(denoise, s, (2000, 4), steps=3, generator=_gen())
    z1 = starts[0]
    assert abs(z1.mean().item()) < 0.03 and abs(z1.std().item() - 1) < 0.03


def test_partial_trajectory_from_given_state():
    s = TanSchedule(5.0)
    seen = []

    def denoise(z, t, x0_prev):
        seen.append((t[0].item(), z.clone()))
        return torch.zeros_like(z)

    z = torch.randn(3, 2)
    sample_latents(denoise, s, z.shape, steps=4, z_init=z, t_start=0.4)
    assert seen[0][0] == pytest.approx(0.4) and torch.equal(seen[0][1], z)


# ----------------------------------------------------------------------------- denoiser and loss


def _tiny_denoiser(kind: str = "transformer", randomize: bool = False):
    torch.manual_seed(0)
    cfg = DiffusionConfig(denoiser=kind, layers=1, width=16, heads=2)
    net = build_denoiser(cfg, latent_dim=3, num_latents=4).eval()
    if randomize:  # leave the zero initialisation of adaLN-Zero, so that every path carries signal
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p) * 0.1)
    return net


@pytest.mark.parametrize("kind", ["transformer", "dit"])
def test_denoiser_uses_z_t_time_and_self_condition_input(kind):
    net = _tiny_denoiser(kind, randomize=True)
    z, t = torch.randn(2, 4, 3), torch.tensor([0.2, 0.7])
    out = net(z, t)
    assert out.shape == (2, 4, 3)
    torch.testing.assert_close(net(z, t, torch.zeros_like(z)), out)  # absent x0_prev = zeros
    assert (net(z, t, torch.randn(2, 4, 3)) - out).abs().max() > 1e-4  # x0_prev is an input
    assert (net(z, t + 0.1) - out).abs().max() > 1e-4  # time is an input
    z2 = z.clone()
    z2[0, 1] += 1
    diff = (net(z2, t) - out).abs().amax((1, 2))
    assert diff[0] > 1e-4 and diff[1] == 0  # samples are independent
    with pytest.raises(ValueError, match="diffusion.denoiser"):
        build_denoiser(DiffusionConfig(denoiser="unet"), latent_dim=3, num_latents=4)


@pytest.mark.parametrize("kind", ["transformer", "dit"])
def test_edm_preconditioning_skips_to_z_t_at_small_t(kind):
    """diffusion.preconditioning=edm: x0_hat = sqrt(alpha) z_t + sqrt(1 - alpha) F, so x0_hat = z_t at t = 0 whatever
    F is; with F = 0 the output is exactly sqrt(alpha) z_t (E[x0 | z_t] for unit-variance Gaussian latents)."""
    z = torch.randn(3, 4, 3)
    t = torch.tensor([0.0, 0.3, 0.9])
    cfg = DiffusionConfig(denoiser=kind, layers=2, width=16, heads=2, preconditioning="edm")
    net = build_denoiser(cfg, latent_dim=3, num_latents=4)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    torch.testing.assert_close(net(z, t)[0], z[0])
    assert (net(z, t)[2] - z[2]).abs().max() > 0.1  # at large t the network's F dominates
    with torch.no_grad():
        net.proj_out.weight.zero_()
        net.proj_out.bias.zero_()
    alpha = build_schedule("tan", cfg.schedule_d, cfg.t_max).alpha(t).view(-1, 1, 1)
    torch.testing.assert_close(net(z, t), alpha.sqrt() * z)
    plain = build_denoiser(DiffusionConfig(denoiser=kind, layers=2, width=16, heads=2), latent_dim=3, num_latents=4)
    with torch.no_grad():
        plain.proj_out.weight.zero_()
        plain.proj_out.bias.zero_()
    if kind == "transformer":
        assert plain(z, t).abs().max() == 0  # none: the network's output is x0_hat itself


def test_dit_blocks_start_as_identity_and_time_enters_through_adaln():
    """adaLN-Zero: zero-initialised modulation makes each block the identity, so t has no effect at init."""
    net = _tiny_denoiser("dit")
    x, c = torch.randn(2, 4, 16), torch.randn(2, 16)
    torch.testing.assert_close(net.blocks[0](x, c), x)
    z = torch.randn(2, 4, 3)
    torch.testing.assert_close(net(z, torch.tensor([0.1, 0.1])), net(z, torch.tensor([0.9, 0.9])))
    with torch.no_grad():
        net.blocks[0].ada[1].weight.normal_()  # non-zero modulation: the block now depends on t
    assert (net(z, torch.tensor([0.1, 0.1])) - net(z, torch.tensor([0.9, 0.9]))).abs().max() > 1e-4


class _Oracle(torch.nn.Module):
    """Returns z0 exactly (it is told the answer) and records every call."""

    def __init__(self, z0, schedule):
        super().__init__()
        self.z0, self.schedule = z0, schedule
        self.calls = []
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, z_t, t, x0_prev=None):
        self.calls.append({"z_t": z_t.clone(), "t": t.clone(), "x0_prev": x0_prev, "grad": torch.is_grad_enabled()})
        return self.z0 + self.w * 0 + len(self.calls) * 1e-3  # distinct output per call


def test_diffusion_loss_is_x0_mse_per_sample():
    s = TanSchedule(5.0)
    z0 = torch.randn(4, 3, 2)
    exact = _Oracle(z0, s)
    exact.forward = lambda z_t, t, x0_prev=None: z0.clone()
    loss = diffusion_loss(exact, s, z0, torch.rand(4), self_condition_prob=0.0, generator=_gen())
    assert loss.shape == (4,) and torch.equal(loss, torch.zeros(4))
    off = _Oracle(z0, s)
    off.forward = lambda z_t, t, x0_prev=None: z0 + torch.arange(4.0).view(4, 1, 1)
    loss = diffusion_loss(off, s, z0, torch.rand(4), self_condition_prob=0.0, generator=_gen())
    torch.testing.assert_close(loss, torch.arange(4.0) ** 2)


def test_diffusion_loss_noises_with_the_schedule():
    s = TanSchedule(5.0)
    z0 = torch.randn(2000, 4, 2)
    t = 0.05 + torch.rand(2000) * 0.9
    oracle = _Oracle(z0, s)
    diffusion_loss(oracle, s, z0, t, self_condition_prob=0.0, generator=_gen())
    call = oracle.calls[0]
    assert torch.equal(call["t"], t)
    a = s.alpha(t).view(-1, 1, 1)
    eps = (call["z_t"] - a.sqrt() * z0) / (1 - a).sqrt()
    assert abs(eps.mean().item()) < 0.02 and abs(eps.std().item() - 1) < 0.02
    corr = torch.corrcoef(torch.stack([eps.flatten(), z0.flatten()]))[0, 1].item()
    assert abs(corr) < 0.03


def test_self_conditioning_calls():
    s = TanSchedule(5.0)
    z0 = torch.randn(4, 3, 2)
    t = torch.rand(4)
    oracle = _Oracle(z0, s)
    diffusion_loss(oracle, s, z0, t, self_condition_prob=1.0, generator=_gen())
    assert len(oracle.calls) == 2
    first, second = oracle.calls
    assert first["x0_prev"] is None and not first["grad"]  # estimate without self-conditioning, no grad
    torch.testing.assert_close(second["x0_prev"], z0 + 1e-3)  # ... fed to the trained prediction
    assert not second["x0_prev"].requires_grad
    assert torch.equal(first["z_t"], second["z_t"]) and torch.equal(first["t"], second["t"])
    oracle = _Oracle(z0, s)
    diffusion_loss(oracle, s, z0, t, self_condition_prob=0.0, generator=_gen())
    assert len(oracle.calls) == 1 and oracle.calls[0]["x0_prev"] is None


def test_self_conditioning_probability_half():
    s = TanSchedule(5.0)
    z0 = torch.randn(2, 1, 1)
    oracle, g = _Oracle(z0, s), _gen(3)
    for _ in range(400):
        diffusion_loss(oracle, s, z0, torch.rand(2), self_condition_prob=0.5, generator=g)
    with_sc = sum(c["x0_prev"] is not None for c in oracle.calls)
    assert abs(with_sc / 400 - 0.5) < 0.08  # std 0.025


def test_loss_gradient_reaches_denoiser_with_self_conditioning():
    s = TanSchedule(5.0)
    net = _tiny_denoiser().train()
    z0 = torch.randn(4, 4, 3)
    diffusion_loss(net, s, z0, torch.rand(4), self_condition_prob=1.0, generator=_gen()).mean().backward()
    assert net.proj_in.weight.grad is not None
    # the x0_prev half of the input projection is trained (the estimate was fed in)
    assert net.proj_in.weight.grad[:, 3:].abs().sum() > 0
