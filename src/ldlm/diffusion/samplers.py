"""Reverse-time samplers for the VP diffusion with an x0-predicting denoiser, chosen by ``sample.sampler``.

All start at ``z ~ N(0, I)`` at ``t = t_max`` and walk a uniform grid down to 0, always feeding the
previous x0 estimate back (self-conditioning at sampling time). With the score
``s = -(z - sqrt(alpha) x0_hat) / (1 - alpha)`` and ``beta = -d log alpha / dt``:

- ``euler`` (COSMOS): Euler on the probability-flow ODE  ``dz/dt = -beta/2 (z + s)``;
- ``euler_maruyama`` (LDLM): Euler-Maruyama on the reverse SDE ``dz = -beta (z/2 + s) dt + sqrt(beta) dW``;
- ``ddim``: the deterministic DDIM jump ``z_s = sqrt(alpha_s) x0_hat + sqrt(1 - alpha_s) eps_hat``;
- ``ddpm``: ancestral sampling from the DDPM posterior ``q(z_s | z_t, x0 = x0_hat)``, the step of the same reverse
  SDE that is exact in time given x0_hat. With the tan schedule beta(t) dt is ~10 (200 steps) to ~62 (32 steps) at
  the first step, so ``euler_maruyama`` there throws the state to 5-31x its std; ``ddpm`` keeps it at ~1.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

Denoise = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


@torch.inference_mode()
def sample_latents(
    denoise: Denoise,
    schedule,
    shape: tuple[int, ...],
    *,
    steps: int,
    sampler: str = "euler",
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    z_init: torch.Tensor | None = None,
    t_start: float | None = None,
    autocast: torch.dtype | None = None,
) -> torch.Tensor:
    """Generate normalised latents ``(B, N, d)``: the final x0 estimate (float32) after ``steps`` denoiser calls.

    ``z_init``/``t_start`` start from a given (noised) state instead of pure noise (for probes). ``autocast``: run
    the denoiser calls under autocast to this dtype (the sampler's state stays float32).
    """
    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r} is unknown: use {' | '.join(SAMPLERS)}")
    t0 = schedule.t_max if t_start is None else t_start
    z = z_init.to(device) if z_init is not None else torch.randn(shape, generator=generator).to(device)
    grid = torch.linspace(t0, 0.0, steps + 1, device=device)
    # noise for the stochastic sampler, drawn up front (one generator call, reproducible)
    noise = torch.randn((steps, *z.shape), generator=generator).to(device) if sampler in STOCHASTIC else None
    x0 = None
    amp = torch.autocast(torch.device(device).type, dtype=autocast) if autocast else contextlib.nullcontext()
    for i in range(steps):
        t, t_next = grid[i], grid[i + 1]
        tb = t.expand(z.shape[0])
        with amp:
            x0 = denoise(z, tb, x0).float()
        z = SAMPLERS[sampler](schedule, z, x0, t, t_next, None if noise is None else noise[i])
    return x0


def _score(schedule, z, x0, t):
    alpha = schedule.alpha(t)
    return -(z - alpha.sqrt() * x0) / (1 - alpha).clamp_min(1e-12)


def euler_step(schedule, z, x0, t, t_next, noise=None):
    beta = schedule.beta(t)
    return z - (t_next - t) * 0.5 * beta * (z + _score(schedule, z, x0, t))


def euler_maruyama_step(schedule, z, x0, t, t_next, noise):
    beta = schedule.beta(t)
    dt = t - t_next  # > 0
    drift = -beta * (0.5 * z + _score(schedule, z, x0, t))  # reverse-SDE drift in forward time
    z = z - dt * drift
    if t_next > 0:
        z = z + (beta * dt).sqrt() * noise
    return z


def ddim_step(schedule, z, x0, t, t_next, noise=None):
    a, a_next = schedule.alpha(t), schedule.alpha(t_next)
    eps = (z - a.sqrt() * x0) / (1 - a).sqrt().clamp_min(1e-12)
    return a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps


def ddpm_step(schedule, z, x0, t, t_next, noise):
    """z_s ~ q(z_s | z_t, x0_hat) (Ho et al. 2020, Eq. 7): mean c_x0 x0_hat + c_z z_t,
    variance (1 - a_s)(1 - a_t / a_s) / (1 - a_t)."""
    a, a_next = schedule.alpha(t), schedule.alpha(t_next)
    a_step = a / a_next  # alpha of the transition s -> t
    denom = (1 - a).clamp_min(1e-12)
    mean = a_next.sqrt() * (1 - a_step) / denom * x0 + a_step.sqrt() * (1 - a_next) / denom * z
    if t_next <= 0:
        return mean
    return mean + ((1 - a_next) * (1 - a_step) / denom).clamp_min(0).sqrt() * noise


SAMPLERS = {"euler": euler_step, "euler_maruyama": euler_maruyama_step, "ddim": ddim_step, "ddpm": ddpm_step}
STOCHASTIC = ("euler_maruyama", "ddpm")  # samplers that draw fresh noise at every step
