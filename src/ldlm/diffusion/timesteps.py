"""Training timestep samplers, chosen by ``diffusion.timestep_sampler`` (the adaptive one is LDLM's).

``sample(batch, generator) -> t: (B,)`` on the CPU; ``update(t: (B,), loss: (B,))`` after each micro-batch.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ldlm.training.distributed import all_gather_cat


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


def isotonic_fit(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The weighted least-squares non-decreasing fit of ``values`` (pool adjacent violators): (K,) -> (K,).

    Unlike a running maximum, one high outlier is averaged with its neighbours instead of lifting every later value.
    """
    blocks: list[list[float]] = []  # [weighted mean, weight, size]
    for v, w in zip(values.tolist(), weights.tolist(), strict=True):
        blocks.append([v, w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (v2, w2, n2), (v1, w1, n1) = blocks.pop(), blocks.pop()
            blocks.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    return torch.tensor([v for v, _, n in blocks for _ in range(n)], dtype=values.dtype, device=values.device)


class AdaptiveTimesteps(nn.Module):
    """LDLM Sec. 5.3, Eq. 5 (after Dieleman et al. 2022): bin i of ``bins`` equal bins of [0, t_max] is drawn with
    p_i = (L(u_{i+1}) - L(u_i)) / (L(u_N) - L(u_0)), then t ~ U(u_i, u_{i+1}], so the loss grows linearly in F(t).

    The loss curve changes during training, so L(u_i) is re-estimated at every refresh from the samples since the
    previous refresh only (their sums near each edge also decay by ``ema_decay`` per update); an edge with less than
    one recent sample is interpolated from its neighbours; the curve is then fitted monotone (isotonic regression).
    p is recomputed every ``refresh_every`` updates once ``start`` updates have passed (uniform before).
    ``uniform_mix`` = m draws from (1 - m) p + m / N, a floor beyond the paper (m = 0) without which a bin whose p
    reaches 0 is never drawn, hence never re-estimated. All state is in buffers (saved with the task's state_dict).
    """

    def __init__(
        self,
        t_max: float = 0.999,
        *,
        bins: int = 100,
        refresh_every: int = 5000,
        ema_decay: float = 0.99,
        uniform_mix: float = 0.05,
        start: int = 0,
    ):
        super().__init__()
        if not 0.0 <= uniform_mix <= 1.0:
            raise ValueError(f"uniform_mix={uniform_mix} must be in [0, 1]")
        self.t_max, self.bins, self.refresh_every, self.ema_decay = t_max, bins, refresh_every, ema_decay
        self.uniform_mix, self.start = uniform_mix, start
        f64 = dict(dtype=torch.float64)
        self.register_buffer("edge_sum", torch.zeros(bins + 1, **f64))  # decayed sum of w * loss near u_i
        self.register_buffer("edge_weight", torch.zeros(bins + 1, **f64))  # decayed sum of the weights w
        self.register_buffer("edge_count", torch.zeros(bins + 1, **f64))  # decayed effective samples near u_i
        self.register_buffer("edge_loss", torch.zeros(bins + 1, **f64))  # the fitted L(u_i) of the last refresh
        self.register_buffer("probs", torch.full((bins,), 1.0 / bins, **f64))  # p_i, (N,)
        self.register_buffer("updates", torch.zeros((), **f64))  # update() calls so far
        self.register_buffer("samples_seen", torch.zeros((), **f64))  # samples folded in so far (all processes)

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
        """Fold per-sample losses (B,) at times t (B,) into the decayed edge sums; refresh p every ``refresh_every``.

        A sample at position x = t N / t_max between edges i and i+1 counts for edge i with weight (i+1-x) and for
        edge i+1 with weight (x-i), divided by the sampling density of its bin, so the edge estimate does not lean
        towards the more often sampled side. Under several processes every one folds in all processes' samples
        (a collective), so the sampler's state stays identical across them.
        """
        device = self.edge_sum.device
        t, loss = t.detach().double().to(device), loss.detach().double().to(device)
        t, loss = all_gather_cat(t), all_gather_cat(loss)  # several processes: all fold in the global batch
        pos = (t / self.t_max * self.bins).clamp(0, self.bins)
        left = pos.floor().long().clamp(max=self.bins - 1)
        frac = pos - left
        inv_density = 1.0 / (self.sampling_probs()[left] * self.bins).clamp_min(1e-6)
        for buf in (self.edge_sum, self.edge_weight, self.edge_count):
            buf.mul_(self.ema_decay)  # forget old samples: the loss curve moves as the model learns
        for edge, w in ((left, 1 - frac), (left + 1, frac)):
            self.edge_weight.index_add_(0, edge, w * inv_density)
            self.edge_sum.index_add_(0, edge, w * inv_density * loss)
            self.edge_count.index_add_(0, edge, w)
        self.updates += 1
        self.samples_seen += t.numel()
        done = int(self.updates.item())
        if done >= self.start and done % self.refresh_every == 0:
            self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        """p_i from the increments of the monotone fit of the recent edge losses (uniform if L is flat); then the
        sums restart, so the next refresh sees only the loss curve of its own window."""
        known = self.edge_count >= 1.0  # at least one recent sample's worth of weight
        if known.sum() < 2:
            return
        edges = torch.arange(self.bins + 1, dtype=torch.float64, device=self.edge_sum.device)
        raw = self.edge_sum[known] / self.edge_weight[known]
        loss = torch.from_numpy(np.interp(edges.cpu().numpy(), edges[known].cpu().numpy(), raw.cpu().numpy()))
        loss = loss.to(edges)
        if self.uniform_mix == 0 and self.edge_loss.any():
            # without a floor a bin with p = 0 gets no samples: its edges keep their last estimate (stationary loss)
            loss = torch.where(known, loss, self.edge_loss)
        fit = isotonic_fit(loss, self.edge_count.clamp_min(1.0))
        self.edge_loss.copy_(fit)
        increments = fit[1:] - fit[:-1]
        total = increments.sum()
        if total > 0:
            self.probs.copy_(increments / total)
        else:
            self.probs.fill_(1.0 / self.bins)
        for buf in (self.edge_sum, self.edge_weight, self.edge_count):
            buf.zero_()


def build_timestep_sampler(
    name: str,
    t_max: float,
    *,
    bins: int = 100,
    refresh_every: int = 5000,
    ema_decay: float = 0.99,
    uniform_mix: float = 0.05,
    start: int = 0,
) -> UniformTimesteps | AdaptiveTimesteps:
    """Samplers by config name (``diffusion.timestep_sampler``); the keywords configure the adaptive one."""
    if name == "uniform":
        return UniformTimesteps(t_max)
    if name == "adaptive":
        return AdaptiveTimesteps(
            t_max, bins=bins, refresh_every=refresh_every, ema_decay=ema_decay, uniform_mix=uniform_mix, start=start
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
        start=cfg.adaptive_start,
    )
