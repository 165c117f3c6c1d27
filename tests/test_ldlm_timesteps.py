"""Adaptive timestep sampling (LDLM Sec. 5.3, Eq. 5): the loss becomes linear in the new time; its state survives a
checkpoint round trip through the Trainer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ldlm.config import TrainConfig, load_config
from ldlm.diffusion.timesteps import AdaptiveTimesteps, UniformTimesteps, build_timestep_sampler, timestep_sampler_for
from ldlm.train import Trainer

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
    sampler = AdaptiveTimesteps(T_MAX, bins=100, refresh_every=20, ema_decay=0.99)
    g = _feed(sampler, 400)
    assert _deviation_from_linear(sampler, g) < 0.03
    # the uniform sampler, fed the same curve, is far from linear: the test sees the mechanism
    uniform = UniformTimesteps(T_MAX)
    assert _deviation_from_linear(uniform, _feed(uniform, 1)) > 0.2
    # the density follows dL/du: late bins are drawn far more often than early ones
    assert sampler.probs[-10:].sum() > 10 * sampler.probs[:10].sum()
    assert sampler.probs.sum().item() == pytest.approx(1.0)


def test_uniform_mix_floors_every_bin_and_keeps_the_loss_estimate():
    pure = AdaptiveTimesteps(T_MAX, bins=100, refresh_every=20)
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
