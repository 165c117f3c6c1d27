"""Latent denoisers ``x0_hat = f(z_t, t, x0_prev)`` chosen by ``diffusion.denoiser``.

COSMOS: a 12-layer pre-norm transformer (width 768, 12 heads). The input is ``[z_t ; x0_prev]`` (self-
conditioning: the previous estimate of z_0, zeros when absent) projected to the width, plus learned
positions and a sinusoidal time embedding; the output is the x0 prediction (same shape as z_t).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ldlm.config import DiffusionConfig
from ldlm.perceiver import MLP


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of t in [0, 1] (scaled by 1000, as for discrete DDPM steps): (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class SelfAttentionBlock(nn.Module):
    """Pre-norm transformer block on ``scaled_dot_product_attention``."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = MLP(width, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, width = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, n, width))
        return x + self.mlp(self.norm2(x))


class TransformerDenoiser(nn.Module):
    """z_t, x0_prev: (B, N, d), t: (B,) -> x0_hat: (B, N, d)."""

    def __init__(self, cfg: DiffusionConfig, *, latent_dim: int, num_latents: int):
        super().__init__()
        width = cfg.width
        self.latent_dim = latent_dim
        self.proj_in = nn.Linear(2 * latent_dim, width)
        self.pos = nn.Parameter(torch.randn(num_latents, width) * 0.02)
        self.time_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList(SelfAttentionBlock(width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.layers))
        self.norm_out = nn.LayerNorm(width)
        self.proj_out = nn.Linear(width, latent_dim)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, x0_prev: torch.Tensor | None = None) -> torch.Tensor:
        if x0_prev is None:
            x0_prev = torch.zeros_like(z_t)
        x = self.proj_in(torch.cat([z_t, x0_prev], dim=-1)) + self.pos[: z_t.shape[1]]
        x = x + self.time_mlp(timestep_embedding(t, x.shape[-1])).unsqueeze(1)
        for block in self.blocks:
            x = block(x)
        return self.proj_out(self.norm_out(x))


def build_denoiser(cfg: DiffusionConfig, *, latent_dim: int, num_latents: int) -> nn.Module:
    if cfg.denoiser == "transformer":
        return TransformerDenoiser(cfg, latent_dim=latent_dim, num_latents=num_latents)
    raise ValueError(f"diffusion.denoiser={cfg.denoiser!r} is unknown: use transformer")


def diffusion_loss(
    denoiser: nn.Module,
    schedule,
    z0: torch.Tensor,
    t: torch.Tensor,
    *,
    self_condition_prob: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """x0-prediction MSE ``||z_0 - f(z_t, t)||^2`` per sample (B,), with self-conditioning.

    With probability ``self_condition_prob`` the batch first gets an estimate without self-conditioning
    (no gradient), which is then fed as ``x0_prev`` to the prediction that is trained.
    """
    eps = torch.randn(z0.shape, generator=generator).to(z0.device)
    z_t = schedule.add_noise(z0, t, eps)
    x0_prev = None
    if self_condition_prob > 0 and torch.rand((), generator=generator).item() < self_condition_prob:
        with torch.no_grad():
            x0_prev = denoiser(z_t, t).detach()
    pred = denoiser(z_t, t, x0_prev)
    return ((pred - z0) ** 2).mean(dim=tuple(range(1, z0.dim())))
