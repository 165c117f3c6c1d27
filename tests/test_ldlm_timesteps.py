"""Adaptive timestep sampling (LDLM Sec. 5.3, Eq. 5): the loss becomes linear in the new time; its state survives a
checkpoint round trip through the Trainer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ldlm.config import TrainConfig, load_config
from ldlm.diffusion.timesteps import AdaptiveTimesteps, UniformTimesteps, build_timestep_sampler, timestep_sampler_for
from ldlm.training.train import Trainer

T_MAX = 0.999


def _loss_curve(t: torch.Tensor) -> torch.Tensor:
    """A known monotone loss: flat early, steep late (as x0-prediction MSE is over the tan schedule)."""
    return t**3 + 0.1 * t


def _feed(sampler, steps: int, seed: int = 0, noise: float = 0.05):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        t = sampler.sample(256, g)
        sampler.update(t, _loss_curve(t) + noise * torch.randn(256, generator=g))
    return g


def _deviation_from_linear(sampler, g) -> float:
    """Max |L(u) - L(0) - (L(t_max) - L(0)) F(u)| over a large sample, F = the sampler's empirical CDF."""
    u = sampler.sample(200_000, g).sort().values
    new_time = (torch.arange(len(u)) + 0.5) / len(u)
    lo, hi = _loss_curve(torch.tensor(0.0)), _loss_curve(torch.tensor(T_MAX))
    return (_loss_curve(u) - lo - (hi - lo) * new_time).abs().max().item() / (hi - lo).item()


def test_adaptive_sampler_makes_the_loss_linear_in_the_new_time():
    sampler = AdaptiveTimesteps(T_MAX, bins=100, refresh_every=20, ema_decay=0.99, uniform_mix=0.0)  # Eq. 5 alone
    g = _feed(sampler, 400)
    assert _deviation_from_linear(sampler, g) < 0.03
    # the uniform sampler, fed the same curve, is far from linear: the test sees the mechanism
    uniform = UniformTimesteps(T_MAX)
    assert _deviation_from_linear(uniform, _feed(uniform, 1)) > 0.2
    # the density follows dL/du: late bins are drawn far more often than early ones
    assert sampler.probs[-10:].sum() > 10 * sampler.probs[:10].sum()
    assert sampler.probs.sum().item() == pytest.approx(1.0)


def test_uniform_mix_floors_every_bin_and_keeps_the_loss_estimate():
    pure = AdaptiveTimesteps(T_MAX, bins=100, refresh_every=20, uniform_mix=0.0)
    mixed = AdaptiveTimesteps(T_MAX, bins=100, refresh_every=20, uniform_mix=0.3)
    _feed(pure, 400)
    g = _feed(mixed, 400)
    # the floor: no bin below m / N, although pure adaptive sampling starves the early bins
    assert pure.probs[:10].min() < 0.3 / 100 / 3
    assert mixed.sampling_probs().min() >= 0.3 / 100 - 1e-12
    t = mixed.sample(200_000, g)
    assert (t < 0.1).float().mean().item() >= 0.3 * 0.1 * 0.95
    # importance weights undo the mixing: p still follows the loss increments of the pure sampler
    assert (mixed.probs.cumsum(0) - pure.probs.cumsum(0)).abs().max().item() < 0.03
    with pytest.raises(ValueError, match="uniform_mix"):
        AdaptiveTimesteps(T_MAX, uniform_mix=1.5)


def test_uniform_until_the_first_refresh_then_every_k_updates():
    sampler = AdaptiveTimesteps(T_MAX, bins=10, refresh_every=5)
    _feed(sampler, 4, noise=0.0)
    assert torch.allclose(sampler.probs, torch.full((10,), 0.1, dtype=torch.float64))
    _feed(sampler, 1, noise=0.0)  # 5th update: refresh
    first = sampler.probs.clone()
    assert not torch.allclose(first, torch.full((10,), 0.1, dtype=torch.float64))
    _feed(sampler, 4, seed=1, noise=0.0)
    assert torch.equal(sampler.probs, first)  # frozen between refreshes
    t = sampler.sample(1000, torch.Generator().manual_seed(0))
    assert t.min() >= 0 and t.max() <= T_MAX


def test_flat_loss_keeps_uniform_probabilities():
    sampler = AdaptiveTimesteps(T_MAX, bins=10, refresh_every=1)
    sampler.update(torch.rand(100) * T_MAX, torch.ones(100))
    assert torch.allclose(sampler.probs, torch.full((10,), 0.1, dtype=torch.float64))


def test_built_from_config():
    cfg = load_config("ldlm_tiny").diffusion
    sampler = timestep_sampler_for(cfg)
    assert isinstance(sampler, AdaptiveTimesteps)
    assert (sampler.bins, sampler.refresh_every) == (cfg.adaptive_bins, cfg.adaptive_refresh_every)
    assert isinstance(build_timestep_sampler("uniform", T_MAX), UniformTimesteps)
    with pytest.raises(ValueError, match="uniform | adaptive"):
        build_timestep_sampler("cosine", T_MAX)
    assert load_config("ldlm_lm1b").diffusion.adaptive_bins == 100


class _SamplerTask(nn.Module):
    """A toy task whose loss depends on t: a trainable scale and the adaptive sampler as a submodule."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1, 1))
        self.timesteps = AdaptiveTimesteps(T_MAX, bins=20, refresh_every=3)
        self.generator = torch.Generator().manual_seed(0)

    def forward(self, batch, step):
        t = self.timesteps.sample(64, self.generator)
        per_sample = (self.scale[0] * t) ** 2 + t
        self.timesteps.update(t, per_sample.detach())
        return per_sample.mean(), {"loss": per_sample.mean().item()}


def _trainer(task, tmp_path, steps):
    tcfg = TrainConfig(
        steps=steps, batch_size=1, lr=1e-2, warmup_steps=0, ema_decay=0.9, ema_update_after=0,
        eval_every=10**9, log_every=2, save_every=4, mixed_precision="no",
    )  # fmt: skip
    return Trainer(task, tcfg, log_dir=tmp_path, name="toy", progress=False)


def _batches():
    while True:
        yield {}


def test_checkpoint_round_trip_restores_the_sampler(tmp_path):
    task = _SamplerTask()
    trainer = _trainer(task, tmp_path, steps=10)
    trainer.fit(_batches())
    trainer.save_checkpoint(10)
    state = {k: v.clone() for k, v in task.timesteps.state_dict().items()}
    assert not torch.allclose(state["probs"], torch.full((20,), 0.05, dtype=torch.float64))  # it has adapted
    assert state["updates"].item() == 10

    fresh = _SamplerTask()
    assert not torch.equal(fresh.timesteps.probs, state["probs"])
    resumed = _trainer(fresh, tmp_path, steps=12)
    assert resumed.load_checkpoint() == 10
    for key, value in state.items():
        assert torch.equal(fresh.timesteps.state_dict()[key], value), key
    torch.testing.assert_close(fresh.scale.detach(), task.scale.detach())
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(fresh.timesteps.sample(50, g1), task.timesteps.sample(50, g2))
    # and training continues from there
    resumed.fit(_batches(), start_step=10)
    assert fresh.timesteps.updates.item() == 12
    assert resumed.history[-1]["step"] == 12


def test_ema_copies_sampler_buffers_instead_of_averaging(tmp_path):
    task = _SamplerTask()
    trainer = _trainer(task, tmp_path, steps=6)
    trainer.fit(_batches())
    torch.testing.assert_close(trainer.ema.ema_model.timesteps.probs, task.timesteps.probs)
    assert trainer.ema.ema_model.timesteps.updates.item() == task.timesteps.updates.item() == 6


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        _trainer(_SamplerTask(), tmp_path / "none", steps=2).load_checkpoint()


# ----------------------------------------------------------------------------- non-stationary losses (issue 21)


def _coarse(probs: torch.Tensor, groups: int = 10) -> torch.Tensor:
    return probs.view(groups, -1).sum(1)


def _ideal_probs(curve, bins: int, uniform_mix: float) -> torch.Tensor:
    """The sampling probabilities Eq. 5 asks for under the current loss curve, with the same uniform floor."""
    edges = torch.linspace(0, T_MAX, bins + 1, dtype=torch.float64)
    inc = curve(edges).diff()
    return (1 - uniform_mix) * inc / inc.sum() + uniform_mix / bins


def test_isotonic_fit_averages_an_outlier_instead_of_lifting_everything_after_it():
    from ldlm.diffusion.timesteps import isotonic_fit

    values = torch.tensor([0.0, 1.0, 10.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    fit = isotonic_fit(values, torch.ones(6, dtype=torch.float64))
    assert (fit.diff() >= 0).all()
    torch.testing.assert_close(fit, torch.tensor([0.0, 1.0, 4.75, 4.75, 4.75, 4.75], dtype=torch.float64))
    assert isotonic_fit(torch.arange(5.0).double(), torch.ones(5).double()).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("refresh_every", [25, 100])
def test_a_tenfold_loss_drop_is_tracked_within_three_refreshes(refresh_every):
    """Early in training the loss is high and flat at small t; then it drops 10x and its shape moves: the drawn-t
    histogram must return within 10% (total variation, 10 coarse bins) of the ideal within 3 refreshes, and no bin
    may sit at probability 0 (a running max over stale estimates starved t < 0.2 for good)."""
    before = lambda t: 1.0 - 0.9 * torch.exp(-((t / 0.15) ** 2)) + 0.5 * t  # most of the rise at small t
    after = lambda t: 0.1 * (t**3 + 0.1 * t)  # 10x lower, the rise moved to large t
    sampler = AdaptiveTimesteps(T_MAX, bins=100, refresh_every=refresh_every, ema_decay=0.98)
    g = torch.Generator().manual_seed(0)

    def feed(curve, updates):
        for _ in range(updates):
            t = sampler.sample(256, g)
            sampler.update(t, curve(t.double()) * (1 + 0.1 * torch.randn(256, generator=g, dtype=torch.float64)))

    feed(before, 6 * refresh_every)
    tv_before = 0.5 * (_coarse(sampler.sampling_probs()) - _coarse(_ideal_probs(before, 100, 0.05))).abs().sum()
    assert tv_before < 0.1  # it had adapted to the first curve
    feed(after, 3 * refresh_every)
    ideal = _ideal_probs(after, 100, 0.05)
    tv_after = 0.5 * (_coarse(sampler.sampling_probs()) - _coarse(ideal)).abs().sum()
    assert tv_after < 0.1, f"total variation {tv_after:.3f} from the ideal 3 refreshes after the drop"
    drawn = torch.histc(sampler.sample(100_000, g).float(), bins=10, min=0, max=T_MAX) / 100_000
    assert 0.5 * (drawn - _coarse(ideal).float()).abs().sum() < 0.1
    assert sampler.sampling_probs().min() >= 0.05 / 100 - 1e-12  # the floor: every bin stays drawable


def test_first_refresh_waits_for_start():
    sampler = AdaptiveTimesteps(T_MAX, bins=10, refresh_every=5, start=12)
    _feed(sampler, 10, noise=0.0)  # refreshes at 5 and 10 are skipped: still uniform
    assert torch.allclose(sampler.probs, torch.full((10,), 0.1, dtype=torch.float64))
    _feed(sampler, 5, noise=0.0)  # update 15 >= start: refresh
    assert not torch.allclose(sampler.probs, torch.full((10,), 0.1, dtype=torch.float64))
