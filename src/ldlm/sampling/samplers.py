"""Reverse-time samplers for the VP diffusion with an x0-predicting denoiser, chosen by ``sample.sampler``.

All start at ``z ~ N(0, I)`` at ``t = t_max`` and walk a grid of ``steps + 1`` times down to 0 with one denoiser call
(NFE) per step, always feeding the previous x0 estimate back (self-conditioning at sampling time), and return the
last x0 estimate. The grid is ``time_grid`` (:data:`TIME_GRIDS`, ``sample.time_grid``): ``auto`` is uniform in t for
every sampler but ``dpmpp_2m``, which gets the log-SNR grid (see :func:`time_grid`). With the score
``s = -(z - sqrt(alpha) x0_hat) / (1 - alpha)`` and ``beta = -d log alpha / dt``:

- ``euler`` (COSMOS): Euler on the probability-flow ODE  ``dz/dt = -beta/2 (z + s)``;
- ``euler_maruyama`` (LDLM): Euler-Maruyama on the reverse SDE ``dz = -beta (z/2 + s) dt + sqrt(beta) dW``;
- ``ddim``: the deterministic DDIM jump ``z_s = sqrt(alpha_s) x0_hat + sqrt(1 - alpha_s) eps_hat``;
- ``ddpm``: ancestral sampling from the DDPM posterior ``q(z_s | z_t, x0 = x0_hat)``, the step of the same reverse
  SDE that is exact in time given x0_hat. With the tan schedule beta(t) dt is ~10 (200 steps) to ~62 (32 steps) at
  the first step, so ``euler_maruyama`` there throws the state to 5-31x its std; ``ddpm`` keeps it at ~1;
- ``dpmpp_2m``: DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Alg. 2), the multistep second-order solver of the
  same probability-flow ODE in its data-prediction form. With ``a_t = sqrt(alpha_t)``, ``s_t = sqrt(1 - alpha_t)``,
  ``lambda_t = log(a_t / s_t)`` and ``h_i = lambda_{t_i} - lambda_{t_{i-1}}``, the exact solution
  ``z_{t_i} = s_{t_i}/s_{t_{i-1}} z_{t_{i-1}} + s_{t_i} int e^lambda x0(lambda) dlambda`` is integrated with x0
  linear in lambda through the last two estimates:

      z_{t_i} = (s_{t_i} / s_{t_{i-1}}) z_{t_{i-1}} - a_{t_i} (e^{-h_i} - 1) D_i,
      D_i = (1 + 1/(2 r_i)) x0_hat_{i-1} - 1/(2 r_i) x0_hat_{i-2},   r_i = h_{i-1} / h_i.

  The first step (no previous estimate) is first order, which is exactly ``ddim``. Its default grid is uniform in
  lambda from ``t_max`` to ``t_min = t_of_lambda(DPM_LAMBDA_END)`` (``alpha = 1 / (1 + 1e-4)``, noise std 0.01 on
  unit-scale latents; DPM-Solver's "logSNR" grid), then 0: ``steps`` calls, the last one at ``t_min``, whose x0
  estimate is returned (the step to t = 0 is first order, i.e. z = x0_hat, as in k-diffusion). With
  ``lower_order_final`` the last solver step, into the last call's time, is first order too (DPM-Solver++'s
  ``lower_order_final``; its "denoise to zero" is our step to 0). Error: O(h^2) globally against Euler's O(h);
  ``tests/test_dpm_solver.py`` measures both, ``docs/sampling.md`` sums up.

Time grids (``steps + 1`` times from ``t0`` to 0, the denoiser called at the first ``steps``):

- ``uniform``: uniform in t, ``linspace(t0, 0, steps + 1)``; the last call is at ``t0 / steps``;
- ``logsnr``: uniform in lambda from ``lambda(t0)`` to ``DPM_LAMBDA_END``, then 0 (DPM-Solver);
- ``edm``: Karras et al. (2022) rho = 7 in ``sigma = sqrt((1 - alpha) / alpha) = exp(-lambda)`` between
  ``sigma(t0)`` and ``sigma(t_min) = exp(-DPM_LAMBDA_END)``, then 0: denser at low noise.

Step functions share the signature ``step(schedule, z, x0_hat, t, t_next, noise)``; those in ``MULTISTEP`` also take
``prev=(x0_hat_prev, t_prev)``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch

Denoise = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]

# the logsnr / edm grids' last point before 0: lambda = log(a/s) = log(100), i.e. alpha = 1 / (1 + 1e-4)
DPM_LAMBDA_END = math.log(100.0)
EDM_RHO = 7.0  # Karras et al. (2022) Eq. 5
# sample.time_grid names (ldlm.config.TIME_GRID_NAMES mirrors them); auto: AUTO_GRID[sampler], else uniform
TIME_GRIDS = ("auto", "uniform", "logsnr", "edm")
# dpmpp_2m keeps logsnr: best on the Gaussian oracle (tests/test_dpm_solver.py: 2.5% covariance error at 8 calls,
# uniform 22%), though on cosmos_roc45k uniform is 37-48% closer to a 1000-call ODE solve at 8-32 calls
# (results/dpmpp_grid.json: RMSE 0.25 / 0.15 / 0.09 vs 0.40 / 0.25 / 0.18): a judged sweep should decide
AUTO_GRID = {"dpmpp_2m": "logsnr"}


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
    grid: str = "auto",
    lower_order_final: bool = False,
) -> torch.Tensor:
    """Generate normalised latents ``(B, N, d)``: the final x0 estimate (float32) after ``steps`` denoiser calls.

    ``z_init``/``t_start`` start from a given (noised) state instead of pure noise (for probes). ``autocast``: run
    the denoiser calls under autocast to this dtype (the sampler's state stays float32). ``grid``: one of
    :data:`TIME_GRIDS`. ``lower_order_final``: multistep samplers take their last step before the final x0 estimate
    at first order.
    """
    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r} is unknown: use {' | '.join(SAMPLERS)}")
    t0 = schedule.t_max if t_start is None else t_start
    z = z_init.to(device) if z_init is not None else torch.randn(shape, generator=generator).to(device)
    times = time_grid(schedule, sampler, steps, t0, device, grid=grid)
    # noise for the stochastic sampler, drawn up front (one generator call, reproducible)
    noise = torch.randn((steps, *z.shape), generator=generator).to(device) if sampler in STOCHASTIC else None
    x0 = None
    amp = torch.autocast(torch.device(device).type, dtype=autocast) if autocast else contextlib.nullcontext()
    for i in range(steps):
        t, t_next = times[i], times[i + 1]
        tb = t.expand(z.shape[0])
        with amp:
            x0_new = denoise(z, tb, x0).float()
        # multistep solvers also get the previous estimate and its time (None at the first step)
        first_order = x0 is None or (lower_order_final and i == steps - 2)
        history = {"prev": None if first_order else (x0, times[i - 1])} if sampler in MULTISTEP else {}
        z = SAMPLERS[sampler](schedule, z, x0_new, t, t_next, None if noise is None else noise[i], **history)
        x0 = x0_new
    return x0


def time_grid(
    schedule, sampler: str, steps: int, t0: float, device: torch.device | str = "cpu", grid: str = "auto"
) -> torch.Tensor:
    """The ``steps + 1`` times ``t0 = t_0 > ... > t_steps = 0`` of a run; the denoiser is called at the first ``steps``.

    ``grid`` (:data:`TIME_GRIDS`; module docstring): ``auto`` is ``AUTO_GRID[sampler]``, else ``uniform``. The
    ``logsnr`` and ``edm`` grids end their calls at :func:`grid_t_min` (``t_of_lambda(DPM_LAMBDA_END)``).
    """
    if grid not in TIME_GRIDS:
        raise ValueError(f"time_grid={grid!r} is unknown: use {' | '.join(TIME_GRIDS)}")
    kind = AUTO_GRID.get(sampler, "uniform") if grid == "auto" else grid
    if kind == "uniform":
        return torch.linspace(t0, 0.0, steps + 1, device=device)
    lam0 = schedule.lambda_t(torch.tensor(t0, dtype=torch.float64)).item()
    lam_end = schedule.lambda_t(torch.tensor(grid_t_min(schedule, t0), dtype=torch.float64)).item()
    if kind == "logsnr":
        lam = torch.linspace(lam0, lam_end, steps, dtype=torch.float64)
    else:  # edm: sigma = exp(-lambda), rho-spaced
        ramp = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
        s_max, s_min = math.exp(-lam0 / EDM_RHO), math.exp(-lam_end / EDM_RHO)  # sigma^(1/rho)
        lam = -EDM_RHO * torch.log(s_max + ramp * (s_min - s_max))
    ts = schedule.t_of_lambda(lam)
    ts[0] = t0  # exact start, whatever the inverse's rounding
    return torch.cat([ts, ts.new_zeros(1)]).to(device=device, dtype=torch.float32)


def grid_t_min(schedule, t0: float) -> float:
    """The last call's time on the ``logsnr`` / ``edm`` grids: ``t_of_lambda(DPM_LAMBDA_END)``, or ``t0 / 2`` when
    that is earlier (a late start, ``t0`` near or past it)."""
    return min(schedule.t_of_lambda(torch.tensor(DPM_LAMBDA_END, dtype=torch.float64)).item(), t0 / 2)


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


def dpmpp_2m_step(schedule, z, x0, t, t_next, noise=None, prev=None):
    """One DPM-Solver++(2M) step t -> t_next (Lu et al. 2022, Alg. 2; module docstring). ``prev``: the previous
    x0 estimate and its time, or None for the first-order (DDIM) step. The step to t_next = 0 returns x0.

    Coefficients are computed in float64 on the CPU (1 - alpha_t ~ 1e-4 at the grid's end loses digits in
    float32), the state stays in its dtype."""
    if t_next <= 0:
        return x0  # lambda = +inf: a = 1, s = 0, e^{-h} = 0
    t64, tn64 = (x.detach().to("cpu", torch.float64) for x in (t, t_next))
    a_next = schedule.alpha(tn64).sqrt()
    s, s_next = (1 - schedule.alpha(t64)).sqrt(), (1 - schedule.alpha(tn64)).sqrt()
    lam = schedule.lambda_t(t64)
    h = schedule.lambda_t(tn64) - lam
    d = x0
    if prev is not None:
        x0_prev, t_prev = prev
        r = (lam - schedule.lambda_t(t_prev.detach().to("cpu", torch.float64))) / h  # h_{i-1} / h_i
        d = x0 + (0.5 / r).item() * (x0 - x0_prev)  # (1 + 1/(2r)) x0 - 1/(2r) x0_prev
    return (s_next / s).item() * z - (a_next * torch.expm1(-h)).item() * d


SAMPLERS = {
    "euler": euler_step,
    "euler_maruyama": euler_maruyama_step,
    "ddim": ddim_step,
    "ddpm": ddpm_step,
    "dpmpp_2m": dpmpp_2m_step,
}
STOCHASTIC = ("euler_maruyama", "ddpm")  # samplers that draw fresh noise at every step
MULTISTEP = ("dpmpp_2m",)  # samplers whose step also takes the previous x0 estimate (keyword ``prev``)
