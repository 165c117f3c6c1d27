"""Variance-preserving noise schedules ``z_t = sqrt(alpha_t) z_0 + sqrt(1 - alpha_t) eps``, t in [0, 1].

The tan schedule ``alpha_t = 1 / (1 + d^2 tan^2(pi t / 2))`` is used by both papers (COSMOS: d per
dataset, Table 7; LDLM: d = 3). Samplers also need the VP-SDE rate ``beta(t) = -d log(alpha_t) / dt``, and
DPM-Solver (Lu et al. 2022) the half log-SNR ``lambda_t = log(sqrt(alpha_t) / sqrt(1 - alpha_t))`` with its inverse
``t_of_lambda`` (closed form for tan and cosine: ``lambda_t = -log(d tan(pi t / 2))``,
``t = (2 / pi) arctan(exp(-lambda) / d)``).
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

    def lambda_t(self, t: torch.Tensor) -> torch.Tensor:
        """Half log-SNR ``lambda_t = log(a_t / s_t)`` with ``a_t = sqrt(alpha_t)``, ``s_t = sqrt(1 - alpha_t)``
        (DPM-Solver's notation, Lu et al. 2022 Sec. 2); decreasing in t, +inf at t = 0."""
        alpha = self.alpha(t)
        return 0.5 * (torch.log(alpha) - torch.log1p(-alpha))

    def t_of_lambda(self, lam: torch.Tensor, iters: int = 60) -> torch.Tensor:
        """Inverse of :meth:`lambda_t` on [0, t_max] by bisection (subclasses with a closed form override it);
        lambda beyond the range of [0, t_max] maps to the nearer end."""
        lo, hi = torch.zeros_like(lam), torch.full_like(lam, self.t_max)
        for _ in range(iters):  # lambda_t decreases in t: move lo up where lambda(mid) is still above the target
            mid = 0.5 * (lo + hi)
            above = self.lambda_t(mid) > lam
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        return 0.5 * (lo + hi)

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

    def lambda_t(self, t: torch.Tensor) -> torch.Tensor:
        # a_t / s_t = 1 / (d tan(pi t / 2)): exact where 1 - alpha_t would lose digits near t = 0
        return -math.log(self.d) - torch.log(torch.tan(math.pi * t.clamp(0, self.t_max) / 2))

    def t_of_lambda(self, lam: torch.Tensor, iters: int = 0) -> torch.Tensor:
        """Closed form ``t = (2 / pi) arctan(exp(-lambda) / d)``, clipped to t_max."""
        return (2 / math.pi * torch.atan(torch.exp(-lam) / self.d)).clamp(max=self.t_max)


class CosineSchedule(NoiseSchedule):
    """alpha_t = cos^2(pi t / 2) (the tan schedule with d = 1 up to reparametrisation; a baseline)."""

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.cos(math.pi * t.clamp(0, self.t_max) / 2) ** 2

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return math.pi * torch.tan(math.pi * t.clamp(0, self.t_max) / 2)

    def lambda_t(self, t: torch.Tensor) -> torch.Tensor:
        return -torch.log(torch.tan(math.pi * t.clamp(0, self.t_max) / 2))  # a_t / s_t = cot(pi t / 2)

    def t_of_lambda(self, lam: torch.Tensor, iters: int = 0) -> torch.Tensor:
        """Closed form ``t = (2 / pi) arctan(exp(-lambda))``, clipped to t_max."""
        return (2 / math.pi * torch.atan(torch.exp(-lam))).clamp(max=self.t_max)


def build_schedule(name: str, d: float, t_max: float) -> NoiseSchedule:
    """Schedules by config name (``diffusion.schedule``)."""
    if name == "tan":
        return TanSchedule(d, t_max)
    if name == "cosine":
        return CosineSchedule(t_max)
    raise ValueError(f"diffusion.schedule={name!r} is unknown: use tan | cosine")
