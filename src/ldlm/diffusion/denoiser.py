"""Latent denoisers ``x0_hat = f(z_t, t, x0_prev)`` chosen by ``diffusion.denoiser``.

Both take ``[z_t ; x0_prev]`` (self-conditioning: the previous estimate of z_0, zeros when absent)
projected to the width plus learned positions, and return the x0 prediction (same shape as z_t).

- ``transformer`` (COSMOS): pre-norm transformer; the sinusoidal time embedding is added to the input.
- ``dit`` (LDLM, Peebles & Xie 2023): every block is conditioned on t by adaLN-Zero, i.e. LayerNorm
  without affine, then ``x * (1 + scale(t)) + shift(t)``, and each residual branch multiplied by a
  gate ``g(t)`` initialised to zero, so every block starts as the identity.

``diffusion.preconditioning: edm`` wraps either network F as ``x0_hat = sqrt(alpha) z_t + sqrt(1 - alpha) F``
(EDM's c_skip / c_out for unit-variance latents), so that x0_hat tends to z_t as t -> 0.

Seq2seq (COSMOS App. C.1): built with ``condition_layers``, either denoiser also owns a ``condition_encoder`` and
one cross-attention layer after every block (``cross``, see :mod:`ldlm.diffusion.conditioning`); ``cond=None``
skips them, which is exactly the unconditional denoiser with the same shared weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ldlm.config import DiffusionConfig
from ldlm.diffusion.conditioning import Condition, ConditionEncoder, CrossAttention
from ldlm.diffusion.schedule import build_schedule
from ldlm.model.perceiver import MLP


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of t in [0, 1] (scaled by 1000, as for discrete DDPM steps): (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """DiT's adaptive LayerNorm modulation ``x (1 + scale) + shift``; x: (B, N, W), shift/scale: (B, 1, W)."""
    return x * (1 + scale) + shift


def fused_self_attention(qkv: nn.Linear, proj: nn.Linear, heads: int, x: torch.Tensor) -> torch.Tensor:
    """Unmasked multi-head self-attention with one fused q/k/v projection: x (B, N, W) -> (B, N, W)."""
    b, n, width = x.shape
    q, k, v = qkv(x).view(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
    return proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, width))


class SelfAttentionBlock(nn.Module):
    """Pre-norm transformer block on ``scaled_dot_product_attention``: the unmasked
    :class:`~ldlm.model.transformer.TransformerBlock` with a fused q/k/v projection. Kept apart from it because its
    parameters (``qkv``, ``proj``) and their initialisation order are those of every saved transformer denoiser."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = MLP(width, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + fused_self_attention(self.qkv, self.proj, self.heads, self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _DenoiserStem(nn.Module):
    """Shared input side: ``[z_t ; x0_prev]`` -> width, plus learned positions; t -> conditioning vector.
    With ``condition_layers`` (not None): a source encoder and a cross-attention layer per block (seq2seq)."""

    def __init__(
        self,
        cfg: DiffusionConfig,
        *,
        latent_dim: int,
        num_latents: int,
        condition_layers: int | None = None,
        source_latents: int = 0,
    ):
        super().__init__()
        width = cfg.width
        self.latent_dim = latent_dim
        self.proj_in = nn.Linear(2 * latent_dim, width)
        self.pos = nn.Parameter(torch.randn(num_latents, width) * 0.02)
        self.time_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.proj_out = nn.Linear(width, latent_dim)
        # EDM preconditioning needs alpha_t: the schedule is a pure function of the config (no weights)
        self.skip_schedule = (
            build_schedule(cfg.schedule, cfg.schedule_d, cfg.t_max) if cfg.preconditioning == "edm" else None
        )
        self.conditional = condition_layers is not None
        if self.conditional:
            self.condition_encoder = ConditionEncoder(
                latent_dim=latent_dim,
                width=width,
                heads=cfg.heads,
                layers=condition_layers,
                max_sources=source_latents,
                mlp_ratio=cfg.mlp_ratio,
            )
            self.cross = nn.ModuleList(CrossAttention(width, cfg.heads) for _ in range(cfg.layers))

    def encode_condition(
        self, src: torch.Tensor, src_mask: torch.Tensor, keep: torch.Tensor | None = None
    ) -> Condition:
        """Source latents (B, S, d), mask (B, S), per-sample keep flags (B,) -> the :class:`Condition` to pass."""
        if not self.conditional:
            raise ValueError("this denoiser was built without source conditioning (an unconditional model)")
        return self.condition_encoder(src, src_mask, keep)

    def attend(self, i: int, x: torch.Tensor, cond: Condition | None) -> torch.Tensor:
        """Block ``i``'s cross-attention to the source (identity when ``cond`` is None): (B, N, W)."""
        if cond is None:
            return x
        if not self.conditional:
            raise ValueError("a source was given to a denoiser built without source conditioning")
        return self.cross[i](x, cond)

    def output(self, z_t: torch.Tensor, t: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """x0_hat (B, N, d) from the network's output F: F itself, or c_skip z_t + c_out F (EDM, unit data std)."""
        if self.skip_schedule is None:
            return f
        alpha = self.skip_schedule.alpha(t.float()).view(-1, 1, 1).to(f.dtype)
        return alpha.sqrt() * z_t + (1 - alpha).sqrt() * f

    def embed(self, z_t: torch.Tensor, t: torch.Tensor, x0_prev: torch.Tensor | None) -> tuple:
        """-> (x (B, N, W), c (B, W)); an absent ``x0_prev`` is zeros."""
        if x0_prev is None:
            x0_prev = torch.zeros_like(z_t)
        x = self.proj_in(torch.cat([z_t, x0_prev], dim=-1)) + self.pos[: z_t.shape[1]]
        return x, self.time_mlp(timestep_embedding(t, x.shape[-1]))


class TransformerDenoiser(_DenoiserStem):
    """z_t, x0_prev: (B, N, d), t: (B,) -> x0_hat: (B, N, d); t is added to the input once."""

    def __init__(self, cfg: DiffusionConfig, **kw):
        super().__init__(cfg, **kw)
        self.blocks = nn.ModuleList(SelfAttentionBlock(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.layers))
        self.norm_out = nn.LayerNorm(cfg.width)

    def forward(
        self, z_t: torch.Tensor, t: torch.Tensor, x0_prev: torch.Tensor | None = None, cond: Condition | None = None
    ) -> torch.Tensor:
        x, c = self.embed(z_t, t, x0_prev)
        x = x + c.unsqueeze(1)
        for i, block in enumerate(self.blocks):
            x = self.attend(i, block(x), cond)
        return self.output(z_t, t, self.proj_out(self.norm_out(x)))


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning: x (B, N, W), c (B, W) -> (B, N, W)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = MLP(width, mlp_ratio)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        nn.init.zeros_(self.ada[1].weight)  # adaLN-Zero: gates start at 0, the block is the identity
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).unsqueeze(1).chunk(6, dim=-1)
        x = x + gate1 * fused_self_attention(self.qkv, self.proj, self.heads, modulate(self.norm1(x), shift1, scale1))
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class DiTDenoiser(_DenoiserStem):
    """DiT on the latent sequence: z_t, x0_prev: (B, N, d), t: (B,) -> x0_hat: (B, N, d)."""

    def __init__(self, cfg: DiffusionConfig, **kw):
        super().__init__(cfg, **kw)
        width = cfg.width
        self.blocks = nn.ModuleList(DiTBlock(width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.layers))
        self.norm_out = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        nn.init.zeros_(self.ada_out[1].weight)
        nn.init.zeros_(self.ada_out[1].bias)

    def forward(
        self, z_t: torch.Tensor, t: torch.Tensor, x0_prev: torch.Tensor | None = None, cond: Condition | None = None
    ) -> torch.Tensor:
        x, c = self.embed(z_t, t, x0_prev)
        for i, block in enumerate(self.blocks):
            x = self.attend(i, block(x, c), cond)
        shift, scale = self.ada_out(c).unsqueeze(1).chunk(2, dim=-1)
        return self.output(z_t, t, self.proj_out(modulate(self.norm_out(x), shift, scale)))


DENOISERS = {"transformer": TransformerDenoiser, "dit": DiTDenoiser}


def build_denoiser(
    cfg: DiffusionConfig,
    *,
    latent_dim: int,
    num_latents: int,
    condition_layers: int | None = None,
    source_latents: int = 0,
) -> nn.Module:
    """The configured denoiser; ``condition_layers`` (not None) adds source conditioning over ``source_latents``."""
    if cfg.denoiser not in DENOISERS:
        raise ValueError(f"diffusion.denoiser={cfg.denoiser!r} is unknown: use {' | '.join(DENOISERS)}")
    return DENOISERS[cfg.denoiser](
        cfg,
        latent_dim=latent_dim,
        num_latents=num_latents,
        condition_layers=condition_layers,
        source_latents=source_latents,
    )


def diffusion_loss(
    denoiser: nn.Module,
    schedule,
    z0: torch.Tensor,
    t: torch.Tensor,
    *,
    self_condition_prob: float,
    generator: torch.Generator | None = None,
    cond: Condition | None = None,
) -> torch.Tensor:
    """x0-prediction MSE ``||z_0 - f(z_t, t)||^2`` per sample (B,), with self-conditioning.

    With probability ``self_condition_prob`` the batch first gets an estimate without self-conditioning
    (no gradient), which is then fed as ``x0_prev`` to the prediction that is trained. ``cond``: the source.
    """
    eps = torch.randn(z0.shape, generator=generator).to(z0.device)
    z_t = schedule.add_noise(z0, t, eps)
    extra = {} if cond is None else {"cond": cond}
    x0_prev = None
    if self_condition_prob > 0 and torch.rand((), generator=generator).item() < self_condition_prob:
        with torch.no_grad():
            x0_prev = denoiser(z_t, t, **extra).detach()
    pred = denoiser(z_t, t, x0_prev, **extra)
    return ((pred - z0) ** 2).mean(dim=tuple(range(1, z0.dim())))
