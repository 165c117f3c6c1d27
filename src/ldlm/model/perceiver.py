"""Perceiver Resampler (Flamingo-style), the compressor ``L -> N`` and decompressor ``N -> L`` of COSMOS.

Each block is cross-attention whose queries are the learnable vectors ``u`` and whose keys/values are
``[u; x]``, then an MLP, pre-norm. Queries and inputs have *separate* layer norms (a known bug elsewhere
normalises the inputs with the query norm). COSMOS Sec. 4.1; LDLM Sec. 4 uses the same block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def locality_prior(num_queries: int, num_inputs: int, strength: float) -> torch.Tensor:
    """(Q, K) additive bias: ``strength`` where query q and input k cover the same stretch of the text.

    For Q <= K, query q sees the inputs k with floor(k Q / K) = q (its contiguous chunk); for Q > K,
    query q sees the input floor(q K / Q) that covers its position (output position p -> latent p*N/L).
    """
    q = torch.arange(num_queries).unsqueeze(1)
    k = torch.arange(num_inputs).unsqueeze(0)
    if num_queries <= num_inputs:  # compressor: query q <- inputs in its chunk
        hit = (k * num_queries) // num_inputs == q
    else:  # decompressor: output position q <- the latent covering it
        hit = (q * num_inputs) // num_queries == k
    return hit.float() * strength


class MLP(nn.Sequential):
    def __init__(self, width: int, ratio: float):
        hidden = int(width * ratio)
        super().__init__(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))


class Attention(nn.Module):
    """Multi-head attention on ``scaled_dot_product_attention``; queries and keys/values may differ."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(width, width)
        self.to_kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, Q, D) queries, context: (B, K, D), mask: additive float (B|1, 1, Q|1, K) -> (B, Q, D)."""
        b, q_len, width = x.shape
        q = self.to_q(x).view(b, q_len, self.heads, -1).transpose(1, 2)
        k, v = self.to_kv(context).view(b, context.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(out.transpose(1, 2).reshape(b, q_len, width))


class PerceiverBlock(nn.Module):
    """u <- u + CrossAttn(q=LN_q(u), kv=[LN_q(u); LN_x(x)]); u <- u + MLP(LN(u))."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm_queries = nn.LayerNorm(width)
        self.norm_inputs = nn.LayerNorm(width)  # separate from norm_queries on purpose
        self.attn = Attention(width, heads)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = MLP(width, mlp_ratio)

    def forward(self, u: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        uq = self.norm_queries(u)
        u = u + self.attn(uq, torch.cat([uq, self.norm_inputs(x)], dim=1), mask)
        return u + self.mlp(self.norm_mlp(u))


class PerceiverResampler(nn.Module):
    """Maps a sequence ``x: (B, K, in_dim)`` (K <= max_inputs) to ``(B, Q, out_dim)`` with Q learnable queries.

    ``num_outputs`` may be smaller than ``num_queries`` (the decompressor emits only the first L
    positions of its L_max queries). ``locality_bias > 0`` adds a learnable per-block attention bias
    initialised with :func:`locality_prior` (an engineering aid beyond the paper; 0 = paper).
    """

    def __init__(
        self,
        *,
        num_queries: int,
        max_inputs: int,
        in_dim: int,
        out_dim: int,
        width: int,
        blocks: int,
        heads: int,
        mlp_ratio: float = 4.0,
        locality_bias: float = 0.0,
    ):
        super().__init__()
        self.num_queries, self.max_inputs = num_queries, max_inputs
        self.proj_in = nn.Linear(in_dim, width)
        self.input_pos = nn.Parameter(torch.randn(max_inputs, width) * 0.02)
        self.queries = nn.Parameter(torch.randn(num_queries, width) * 0.02)
        self.blocks = nn.ModuleList(PerceiverBlock(width, heads, mlp_ratio) for _ in range(blocks))
        self.norm_out = nn.LayerNorm(width)
        self.proj_out = nn.Linear(width, out_dim)
        if locality_bias:
            prior = torch.cat(
                [
                    torch.zeros(num_queries, num_queries),
                    locality_prior(num_queries, max_inputs, locality_bias),
                ],
                1,
            )
            self.bias = nn.Parameter(prior.unsqueeze(0).repeat(blocks, 1, 1))  # (blocks, Q, Q + K_max)
        else:
            self.bias = None

    def _mask(self, block: int, q_len: int, k_len: int, key_mask: torch.Tensor | None) -> torch.Tensor | None:
        """Additive attention mask (B|1, 1, Q, Q + K) from the learnable bias and the inputs' padding."""
        mask = None
        if self.bias is not None:
            bias = self.bias[block]
            cols = torch.cat([torch.arange(q_len), self.num_queries + torch.arange(k_len)]).to(bias.device)
            mask = bias[:q_len, cols][None, None]
        if key_mask is not None:
            pad = torch.zeros(key_mask.shape[0], q_len + k_len, device=key_mask.device)
            pad[:, q_len:] = pad[:, q_len:].masked_fill(~key_mask.bool(), float("-inf"))
            pad = pad[:, None, None, :]
            mask = pad if mask is None else mask + pad
        return mask

    def forward(
        self, x: torch.Tensor, key_mask: torch.Tensor | None = None, num_outputs: int | None = None
    ) -> torch.Tensor:
        """x: (B, K, in_dim), key_mask: (B, K) 1 = real input -> (B, num_outputs or Q, out_dim)."""
        b, k_len, _ = x.shape
        if k_len > self.max_inputs:
            raise ValueError(f"input length {k_len} exceeds this resampler's max_inputs={self.max_inputs}")
        q_len = num_outputs or self.num_queries
        x = self.proj_in(x) + self.input_pos[:k_len]
        u = self.queries[:q_len].unsqueeze(0).expand(b, -1, -1)
        for i, block in enumerate(self.blocks):
            u = block(u, x, self._mask(i, q_len, k_len, key_mask))
        return self.proj_out(self.norm_out(u))
