"""Text autoencoder of COSMOS: compressor ``E_z`` (h -> z), decompressor ``D_h`` (z -> h_hat), token head ``D_w``.

The training signals (augmentations, losses) live in :mod:`ldlm.objectives`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ldlm._moved import moved_names
from ldlm.config import AutoencoderConfig
from ldlm.model.perceiver import PerceiverResampler
from ldlm.model.transformer import SelfAttentionResampler, TransformerBlock, key_padding_bias


class IdentityResampler(nn.Module):
    """``autoencoder.latent_encoder = "identity"``: no latent encoder or decoder, z = h (TEncDM-like; the frozen-
    embeddings rows of LDLM Table 2 and COSMOS Table 3 "BERT repr."). Parameter-free; takes the other resamplers'
    constructor arguments and ignores the architecture ones. x: (B, K, D) -> x[:, :num_outputs or K]: (B, ., D),
    padded positions kept as they are (``key_mask`` is not needed)."""

    def __init__(self, *, max_inputs: int, in_dim: int, out_dim: int, **kw):
        super().__init__()
        if in_dim != out_dim:
            raise ValueError(f"an identity latent encoder keeps the features: in_dim={in_dim} != out_dim={out_dim}")
        if kw.get("locality_bias"):
            raise ValueError("locality_bias applies to the Perceiver only; the identity latent encoder has none")
        if kw.get("num_queries", max_inputs) != max_inputs:
            raise ValueError(f"an identity latent encoder keeps its length: num_queries={kw['num_queries']}")
        self.max_inputs = max_inputs

    def forward(
        self, x: torch.Tensor, key_mask: torch.Tensor | None = None, num_outputs: int | None = None
    ) -> torch.Tensor:
        if x.shape[1] > self.max_inputs:
            raise ValueError(f"input length {x.shape[1]} exceeds this resampler's max_inputs={self.max_inputs}")
        return x[:, : num_outputs or x.shape[1]]


# latent encoder / decoder architectures by ``autoencoder.latent_encoder`` (LDLM App. B.4; identity: z = h)
RESAMPLERS = {"perceiver": PerceiverResampler, "self_attention": SelfAttentionResampler, "identity": IdentityResampler}


class TextAutoencoder(nn.Module):
    """h: (B, L, D) normalised encoder features <-> z: (B, N, d) latents; token decoder D_w: (B, L, D) -> (B, L, V).

    D_w is ``autoencoder.token_decoder_layers`` transformer blocks (``token_blocks``; none for COSMOS) and the linear
    ``head``. With ``latent_encoder="identity"`` (``identity_latents``) E_z and D_h are parameter-free identities:
    z = h (N = L, d = D) and h_hat = z.
    """

    def __init__(self, cfg: AutoencoderConfig, *, hidden_size: int, max_length: int, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.identity_latents = cfg.latent_encoder == "identity"
        self.latent_dim = hidden_size if self.identity_latents else cfg.latent_dim or cfg.width
        self.variational = cfg.kl_weight > 0
        common = dict(width=cfg.width, heads=cfg.heads, mlp_ratio=cfg.mlp_ratio, locality_bias=cfg.locality_bias)
        resampler = RESAMPLERS[cfg.latent_encoder]
        self.compressor = resampler(
            num_queries=cfg.num_latents,
            max_inputs=max_length,
            in_dim=hidden_size,
            out_dim=self.latent_dim * (2 if self.variational else 1),  # VAE: mean and log-variance
            blocks=cfg.encoder_blocks,
            **common,
        )
        self.decompressor = resampler(
            num_queries=max_length,
            max_inputs=cfg.num_latents,
            in_dim=self.latent_dim,
            out_dim=hidden_size,
            blocks=cfg.decoder_blocks,
            **common,
        )
        self.hidden_size, self.vocab_size = hidden_size, vocab_size
        self.new_token_decoder()

    def new_token_decoder(self) -> None:
        """(Re)build D_w with fresh weights: ``token_decoder_layers`` blocks + a linear head (LDLM App. B.2)."""
        cfg, width = self.cfg, self.hidden_size
        self.token_blocks = nn.ModuleList(
            TransformerBlock(width, cfg.token_decoder_heads, cfg.mlp_ratio) for _ in range(cfg.token_decoder_layers)
        )
        self.head = nn.Linear(width, self.vocab_size)

    # ------------------------------------------------------------------ encoder / decoder

    def encode_distribution(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """h: (B, L, D), mask: (B, L) -> (mean (B, N, d), log-variance (B, N, d) or None)."""
        out = self.compressor(h, key_mask=mask)
        mean, logvar = out.chunk(2, dim=-1) if self.variational else (out, None)
        if self.cfg.latent_norm == "layernorm":  # each z_i: zero mean, unit variance over its d channels
            mean = F.layer_norm(mean, mean.shape[-1:])
        return mean, None if logvar is None else logvar.clamp(-30.0, 20.0)

    def encode(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Deterministic latents (the posterior mean for the VAE variant): (B, L, D) -> (B, N, d)."""
        return self.encode_distribution(h, mask)[0]

    def decode_hidden(self, z: torch.Tensor, length: int) -> torch.Tensor:
        """z: (B, N, d) -> h_hat: (B, length, D) in the normalised feature space (identity latents: z[:, :length])."""
        return self.decompressor(z, num_outputs=length)

    def token_features(self, h_hat: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The token decoder's blocks (identity without any): (B, L, D), padding mask (B, L) -> (B, L, D)."""
        bias = key_padding_bias(mask) if self.token_blocks else None
        for block in self.token_blocks:
            h_hat = block(h_hat, bias)
        return h_hat

    def logits(self, h_hat: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(..., D) -> (..., V) token logits (with token blocks the input must be (B, L, D))."""
        return self.head(self.token_features(h_hat, mask))

    def decode_tokens(self, z: torch.Tensor, length: int) -> torch.Tensor:
        """z: (B, N, d) -> argmax token ids (B, length), without holding the (B, length, V) logits."""
        return head_argmax(self.head, self.token_features(self.decode_hidden(z, length)))


def head_argmax(head: nn.Linear, h: torch.Tensor, rows: int = 1024) -> torch.Tensor:
    """argmax over the vocabulary of ``head(h)``: (..., D) -> (...) ids, ``rows`` positions at a time.

    Same ids as ``head(h).argmax(-1)``; at most ``rows x V`` float logits exist at once (not ``B x L x V``).
    """
    flat = h.reshape(-1, h.shape[-1])
    ids = [head(part).argmax(-1) for part in flat.split(rows)]
    return torch.cat(ids).view(h.shape[:-1])


__getattr__ = moved_names(
    __name__,
    {
        **dict.fromkeys(
            ("augmentation_strength", "perturb_activations", "latent_dropout", "decoder_input_noise"),
            "ldlm.objectives.augment",
        ),
        **dict.fromkeys(("kl_divergence", "token_cross_entropy"), "ldlm.objectives.losses"),
        "centroid_head_": "ldlm.objectives.head",
    },
)
