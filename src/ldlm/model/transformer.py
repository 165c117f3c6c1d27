"""Bidirectional self-attention stacks: the token decoder's layers (LDLM App. B.2) and the self-attention latent
encoder/decoder alternative to the Perceiver (LDLM App. B.4), built from the Perceiver's attention and MLP.
"""

from __future__ import annotations

import torch
from torch import nn

from ldlm.model.perceiver import MLP, Attention


def key_padding_bias(mask: torch.Tensor | None) -> torch.Tensor | None:
    """mask: (B, L) with 1 = real -> additive attention bias (B, 1, 1, L): 0 at real keys, -inf at padding."""
    if mask is None:
        return None
    bias = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    return bias.masked_fill(~mask.bool(), float("-inf"))[:, None, None, :]


class TransformerBlock(nn.Module):
    """Pre-norm block x <- x + SelfAttn(LN(x)); x <- x + MLP(LN(x)), padding keys masked: (B, L, W) -> (B, L, W)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm_attn = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = MLP(width, mlp_ratio)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        y = self.norm_attn(x)
        x = x + self.attn(y, y, bias)
        return x + self.mlp(self.norm_mlp(x))


class SelfAttentionResampler(nn.Module):
    """LDLM App. B.4: the input states themselves are updated by self-attention blocks and become the outputs
    (one per position, so N = L). Same interface as :class:`~ldlm.model.perceiver.PerceiverResampler`:
    x: (B, K, in_dim), key_mask: (B, K) -> (B, num_outputs or K, out_dim)."""

    def __init__(self, *, max_inputs: int, in_dim: int, out_dim: int, width: int, blocks: int, heads: int, **kw):
        super().__init__()
        if kw.get("locality_bias"):
            raise ValueError("locality_bias applies to the Perceiver only; the self-attention encoder has none")
        if kw.get("num_queries", max_inputs) != max_inputs:
            raise ValueError(f"a self-attention resampler keeps its length: num_queries={kw['num_queries']}")
        mlp_ratio = kw.get("mlp_ratio", 4.0)
        self.max_inputs = max_inputs
        self.proj_in = nn.Linear(in_dim, width)
        self.pos = nn.Parameter(torch.randn(max_inputs, width) * 0.02)
        self.blocks = nn.ModuleList(TransformerBlock(width, heads, mlp_ratio) for _ in range(blocks))
        self.norm_out = nn.LayerNorm(width)
        self.proj_out = nn.Linear(width, out_dim)

    def forward(
        self, x: torch.Tensor, key_mask: torch.Tensor | None = None, num_outputs: int | None = None
    ) -> torch.Tensor:
        k_len = x.shape[1]
        if k_len > self.max_inputs:
            raise ValueError(f"input length {k_len} exceeds this resampler's max_inputs={self.max_inputs}")
        x = self.proj_in(x) + self.pos[:k_len]
        bias = key_padding_bias(key_mask)
        for block in self.blocks:
            x = block(x, bias)
        return self.proj_out(self.norm_out(x))[:, : num_outputs or k_len]
