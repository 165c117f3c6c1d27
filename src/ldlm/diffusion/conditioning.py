"""Source conditioning of the denoiser (COSMOS App. C.1): a transformer encoder over the source latents and a
cross-attention layer after every denoiser block, plus classifier-free guidance (an option beyond the paper).

The cross-attention output projections start at zero, so a conditional denoiser initialised from an unconditional
one computes exactly the unconditional function until training moves them. A :class:`Condition` whose ``keep``
flag is False for a sample (condition dropout) skips cross-attention for it: that sample takes the unconditional path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ldlm.model.perceiver import Attention
from ldlm.model.transformer import TransformerBlock, key_padding_bias


@dataclass
class Condition:
    """Encoded source: ``memory`` (B, S, W), additive key bias (B, 1, 1, S) (-inf at padding), ``keep`` (B,) or None."""

    memory: torch.Tensor
    bias: torch.Tensor
    keep: torch.Tensor | None = None


class ConditionEncoder(nn.Module):
    """Source latents (B, S, d) with mask (B, S) -> :class:`Condition` of width W (``layers`` pre-norm blocks)."""

    def __init__(self, *, latent_dim: int, width: int, heads: int, layers: int, max_sources: int, mlp_ratio: float):
        super().__init__()
        self.max_sources = max_sources
        self.proj_in = nn.Linear(latent_dim, width)
        self.pos = nn.Parameter(torch.randn(max_sources, width) * 0.02)
        self.blocks = nn.ModuleList(TransformerBlock(width, heads, mlp_ratio) for _ in range(layers))
        self.norm_out = nn.LayerNorm(width)

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor, keep: torch.Tensor | None = None) -> Condition:
        if src.shape[1] > self.max_sources:
            raise ValueError(f"{src.shape[1]} source latents exceed this encoder's {self.max_sources} positions")
        if not src_mask.bool().any(1).all():
            raise ValueError("a source has no real positions (an empty source): every source needs text")
        bias = key_padding_bias(src_mask)
        x = self.proj_in(src) + self.pos[: src.shape[1]]
        for block in self.blocks:
            x = block(x, bias)
        return Condition(self.norm_out(x), bias, keep)


class CrossAttention(nn.Module):
    """x <- x + keep * CrossAttn(LN(x), memory): x (B, N, W), memory (B, S, W); zero-initialised output."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        nn.init.zeros_(self.attn.out.weight)
        nn.init.zeros_(self.attn.out.bias)

    def forward(self, x: torch.Tensor, cond: Condition) -> torch.Tensor:
        out = self.attn(self.norm(x), cond.memory, cond.bias)
        if cond.keep is not None:
            out = out * cond.keep.to(out.dtype).view(-1, 1, 1)
        return x + out


def guided_prediction(
    denoiser: nn.Module,
    z_t: torch.Tensor,
    t: torch.Tensor,
    x0_prev: torch.Tensor | None,
    cond: Condition,
    scale: float,
) -> torch.Tensor:
    """Classifier-free guidance ``x0 = uncond + scale (cond - uncond)``: (B, N, d); 1 = conditional only."""
    if scale == 1.0:
        return denoiser(z_t, t, x0_prev, cond=cond)
    uncond = denoiser(z_t, t, x0_prev)
    if scale == 0.0:
        return uncond
    return uncond + scale * (denoiser(z_t, t, x0_prev, cond=cond) - uncond)
