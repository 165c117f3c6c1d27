"""Diffusion-to-encoder warmup (LDLM Sec. 5.2, App. A.2): the latent encoder feels L_diff's gradient scaled by gamma(s).

The diffusion branch sees ``z0_diff = gamma z0 + (1 - gamma) sg(z0)`` (Eq. 28): the same value as ``z0``, but the
gradient that reaches the encoder through it is multiplied by gamma(s), a normalised sigmoid of the step (Eq. 29-30).
"""

from __future__ import annotations

import math

import torch


def warmup_gamma(step: int, warmup_steps: int, *, k: float = 10.0, c: float = 0.8, gamma_min: float = 0.0) -> float:
    """gamma(s) of Eq. 30: gamma_min + (1 - gamma_min) (sig(s) - sig(0)) / (sig(S_wu) - sig(0)) for s <= S_wu, else 1,
    with sig(s) = sigmoid(k (s / S_wu - c)) (Eq. 29). ``warmup_steps`` = S_wu = 0 means no warmup (gamma = 1)."""
    if warmup_steps <= 0 or step > warmup_steps:
        return 1.0

    def sig(s: float) -> float:
        return 1.0 / (1.0 + math.exp(-k * (s / warmup_steps - c)))

    return gamma_min + (1.0 - gamma_min) * (sig(step) - sig(0)) / (sig(warmup_steps) - sig(0))


def scale_encoder_gradient(z0: torch.Tensor, gamma: float) -> torch.Tensor:
    """Eq. 28 as ``sg(z0) + gamma (z0 - sg(z0))``: exactly ``z0`` in the forward pass, gradient times gamma.

    z0: (B, N, d) -> (B, N, d). (Algebraically the paper's form; this order keeps the forward value bit-exact.)
    """
    if gamma == 1.0:
        return z0
    frozen = z0.detach()
    return frozen + gamma * (z0 - frozen)
