"""COSMOS's stage-1 augmentations (Sec. 4.2.2) and LDLM's decoder-input noise (Eq. 2): the perturbations a training
objective applies to h or z; sampling never uses them."""

from __future__ import annotations

import math

import torch

from ldlm.config import AutoencoderConfig


def augmentation_strength(cfg: AutoencoderConfig, step: int) -> float:
    """0 before ``augment_start_step``, then a linear ramp to 1 over ``augment_ramp_steps`` (paper: 1 always)."""
    if step < cfg.augment_start_step:
        return 0.0
    if cfg.augment_ramp_steps <= 0:
        return 1.0
    return min(1.0, (step - cfg.augment_start_step + 1) / cfg.augment_ramp_steps)


def perturb_activations(
    h: torch.Tensor, mask: torch.Tensor, cfg: AutoencoderConfig, strength: float, generator: torch.Generator
) -> tuple[torch.Tensor, str]:
    """One perturbation per batch, each with probability 1/2 (COSMOS Sec. 4.2.2); returns (h', kind).

    (a) masking: each of the L vectors of h is zeroed with probability ``mask_prob``;
    (b) noising: ``h' = delta h + sqrt(1 - delta^2) eps`` on normalised h, ``delta = noise_delta``.
    ``strength`` in [0, 1] scales both towards the identity (1 = the paper's values).
    """
    if strength <= 0:
        return h, "none"
    b, length, _ = h.shape
    use_masking = torch.rand((), generator=generator).item() < 0.5
    if use_masking:
        p = cfg.mask_prob * strength
        drop = torch.rand(b, length, 1, generator=generator).to(h.device) < p
        return h.masked_fill(drop & mask.bool().unsqueeze(-1), 0.0), "mask"
    delta = 1.0 - (1.0 - cfg.noise_delta) * strength
    eps = torch.randn(h.shape, generator=generator).to(h.device)
    return delta * h + math.sqrt(1.0 - delta**2) * eps, "noise"


def latent_dropout(z: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Zero a share ``p`` of the individual features of z: (B, N, d) (no rescaling, as in the paper)."""
    if p <= 0:
        return z
    keep = torch.rand(z.shape, generator=generator).to(z.device) >= p
    return z * keep


def decoder_input_noise(z: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """LDLM Eq. 2: the latent decoder's training input z~0 = z0 + sigma_dec eps; z: (B, N, d) -> (B, N, d).

    Training only: sampling decodes the clean generated latent (LDLM Sec. 4.3); callers skip it in eval mode.
    """
    if sigma <= 0:
        return z
    return z + sigma * torch.randn(z.shape, generator=generator).to(z.device)
