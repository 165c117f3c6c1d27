"""Variance-preserving noise schedules ``z_t = sqrt(alpha_t) z_0 + sqrt(1 - alpha_t) eps``, t in [0, 1].

The tan schedule ``alpha_t = 1 / (1 + d^2 tan^2(pi t / 2))`` is used by both papers (COSMOS: d per
dataset, Table 7; LDLM: d = 3). Samplers also need the VP-SDE rate ``beta(t) = -d log(alpha_t) / dt``.
"""

from __future__ import annotations

import math

import torch


class NoiseSchedule:
    """Base class: subclasses define ``alpha(t)`` and ``beta(t)``; t is clipped to [0, t_max]."""

    def __init__(self, t_max: float = 0.999):
        self.t_max = t_max

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def add_noise(self, z0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """z0: (B, N, d), t: (B,), eps like z0 -> z_t."""
        a = self.alpha(t).view(-1, *([1] * (z0.dim() - 1)))
        return a.sqrt() * z0 + (1 - a).sqrt() * eps


class TanSchedule(NoiseSchedule):
    """alpha_t = 1 / (1 + d^2 tan^2(pi t / 2)); larger d = noisier at every t (COSMOS Table 7)."""

    def __init__(self, d: float, t_max: float = 0.999):
        super().__init__(t_max)
        self.d = d

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        tan = torch.tan(math.pi * t.clamp(0, self.t_max) / 2)
        return 1.0 / (1.0 + self.d**2 * tan**2)

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        # -d/dt log alpha = d^2 * 2 tan * sec^2 * (pi/2) / (1 + d^2 tan^2)
        x = math.pi * t.clamp(0, self.t_max) / 2
        tan = torch.tan(x)
        return self.d**2 * math.pi * tan / torch.cos(x) ** 2 / (1.0 + self.d**2 * tan**2)


class CosineSchedule(NoiseSchedule):
    """alpha_t = cos^2(pi t / 2) (the tan schedule with d = 1 up to reparametrisation; a baseline)."""

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.cos(math.pi * t.clamp(0, self.t_max) / 2) ** 2

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return math.pi * torch.tan(math.pi * t.clamp(0, self.t_max) / 2)


def build_schedule(name: str, d: float, t_max: float) -> NoiseSchedule:
    """Schedules by config name (``diffusion.schedule``)."""
    if name == "tan":
        return TanSchedule(d, t_max)
    if name == "cosine":
        return CosineSchedule(t_max)
    raise ValueError(f"diffusion.schedule={name!r} is unknown: use tan | cosine")
