"""Training timestep samplers, chosen by ``diffusion.timestep_sampler`` (the adaptive one is LDLM's).

``sample(batch, generator) -> t: (B,)`` on the CPU; ``update(t: (B,), loss: (B,))`` after each micro-batch.
"""

from __future__ import annotations

import torch
from torch import nn

from ldlm.distributed import all_gather_cat


class UniformTimesteps:
    """t ~ U(0, t_max) (COSMOS)."""

    def __init__(self, t_max: float = 0.999):
        self.t_max = t_max

    def sample(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.rand(batch, generator=generator) * self.t_max

    def update(self, t: torch.Tensor, loss: torch.Tensor) -> None:
        """Uniform sampling ignores the losses (the adaptive sampler uses them)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class AdaptiveTimesteps(nn.Module):
    """LDLM Sec. 5.3, Eq. 5 (after Dieleman et al. 2022): bin i of ``bins`` equal bins of [0, t_max] is drawn with
    p_i = (L(u_{i+1}) - L(u_i)) / (L(u_N) - L(u_0)), then t ~ U(u_i, u_{i+1}], so the loss grows linearly in F(t).

    L(u_i) is an EMA of the loss at each bin edge; p is recomputed every ``refresh_every`` updates (uniform
    until the first refresh). ``uniform_mix`` = m draws from (1 - m) p + m / N, a floor beyond the paper (m = 0)
    that keeps every t trained. All state is in buffers, so it is saved and restored with the task's state_dict.
    """

    def __init__(
        self,
        t_max: float = 0.999,
        *,
        bins: int = 100,
        refresh_every: int = 5000,
        ema_decay: float = 0.99,
        uniform_mix: float = 0.0,
    ):
        super().__init__()
        if not 0.0 <= uniform_mix <= 1.0:
            raise ValueError(f"uniform_mix={uniform_mix} must be in [0, 1]")
        self.t_max, self.bins, self.refresh_every, self.ema_decay = t_max, bins, refresh_every, ema_decay
        self.uniform_mix = uniform_mix
        f64 = dict(dtype=torch.float64)
        self.register_buffer("edge_loss", torch.zeros(bins + 1, **f64))  # EMA of L(u_i), (N+1,)
        self.register_buffer("edge_count", torch.zeros(bins + 1, **f64))  # samples seen near u_i (0: no estimate)
        self.register_buffer("probs", torch.full((bins,), 1.0 / bins, **f64))  # p_i, (N,)
        self.register_buffer("updates", torch.zeros((), **f64))  # update() calls so far

    def sampling_probs(self) -> torch.Tensor:
        """The bin probabilities actually drawn from, (N,): p mixed with the uniform floor."""
        return (1.0 - self.uniform_mix) * self.probs + self.uniform_mix / self.bins

    def sample(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """t: (batch,) on the CPU: a bin by the sampling probabilities, then uniform inside it."""
        probs = self.sampling_probs().detach().float().cpu()
        bin_idx = torch.multinomial(probs, batch, replacement=True, generator=generator)
        return (bin_idx + torch.rand(batch, generator=generator)) * (self.t_max / self.bins)

    @torch.no_grad()
    def update(self, t: torch.Tensor, loss: torch.Tensor) -> None:
        """Fold per-sample losses (B,) at times t (B,) into the edge EMAs; refresh p every ``refresh_every`` calls.

        A sample at position x = t N / t_max between edges i and i+1 counts for edge i with weight (i+1-x) and for
        edge i+1 with weight (x-i), divided by the sampling density of its bin, so the edge estimate does not lean
        towards the more often sampled side. Under several processes every one folds in all processes' samples
        (a collective), so the sampler's state stays identical across them.
        """
        device = self.edge_loss.device
        t, loss = t.detach().double().to(device), loss.detach().double().to(device)
        t, loss = all_gather_cat(t), all_gather_cat(loss)  # several processes: all fold in the global batch
        pos = (t / self.t_max * self.bins).clamp(0, self.bins)
        left = pos.floor().long().clamp(max=self.bins - 1)
        frac = pos - left
        inv_density = 1.0 / (self.sampling_probs()[left] * self.bins).clamp_min(1e-6)
        weights = torch.zeros(self.bins + 1, dtype=torch.float64, device=device)
        sums, counts = torch.zeros_like(weights), torch.zeros_like(weights)
        for edge, w in ((left, 1 - frac), (left + 1, frac)):
            weights.index_add_(0, edge, w * inv_density)
            sums.index_add_(0, edge, w * inv_density * loss)
            counts.index_add_(0, edge, w)
        seen = weights > 0
        batch_mean = sums[seen] / weights[seen]
        keep = self.ema_decay ** counts[seen]  # per-sample decay: an edge hit twice moves twice as far
        keep = torch.where(self.edge_count[seen] > 0, keep, torch.zeros_like(keep))  # first estimate: take it
        self.edge_loss[seen] = keep * self.edge_loss[seen] + (1 - keep) * batch_mean
        self.edge_count += counts
        self.updates += 1
        if int(self.updates.item()) % self.refresh_every == 0:
            self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        """p_i from the increments of the edge losses, made monotone (running max); uniform if L is flat."""
        known = self.edge_count > 0
        if known.sum() < 2:
            return
        loss = self.edge_loss.clone()
        loss[~known] = -float("inf")  # edges without an estimate take their left neighbour's value
        loss = torch.cummax(loss, 0).values
        loss[torch.isinf(loss)] = loss[~torch.isinf(loss)][0]
        increments = loss[1:] - loss[:-1]
        total = increments.sum()
        if total > 0:
            self.probs.copy_(increments / total)
        else:
            self.probs.fill_(1.0 / self.bins)


def build_timestep_sampler(
    name: str,
    t_max: float,
    *,
    bins: int = 100,
    refresh_every: int = 5000,
    ema_decay: float = 0.99,
    uniform_mix: float = 0.0,
) -> UniformTimesteps | AdaptiveTimesteps:
    """Samplers by config name (``diffusion.timestep_sampler``); the keywords configure the adaptive one."""
    if name == "uniform":
        return UniformTimesteps(t_max)
    if name == "adaptive":
        return AdaptiveTimesteps(
            t_max, bins=bins, refresh_every=refresh_every, ema_decay=ema_decay, uniform_mix=uniform_mix
        )
    raise ValueError(f"diffusion.timestep_sampler={name!r} is unknown: use uniform | adaptive")


def timestep_sampler_for(cfg) -> UniformTimesteps | AdaptiveTimesteps:
    """The sampler a :class:`~ldlm.config.DiffusionConfig` names, with its adaptive-sampler settings."""
    return build_timestep_sampler(
        cfg.timestep_sampler,
        cfg.t_max,
        bins=cfg.adaptive_bins,
        refresh_every=cfg.adaptive_refresh_every,
        ema_decay=cfg.adaptive_ema_decay,
        uniform_mix=cfg.adaptive_uniform_mix,
    )
