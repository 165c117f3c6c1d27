"""Text autoencoder of COSMOS: compressor ``E_z`` (h -> z), decompressor ``D_h`` (z -> h_hat), token head ``D_w``.

Also the stage-1 training signals of COSMOS Sec. 4.2.2: activation perturbations (masking / Gaussian
noising of h, one per batch), latent feature dropout, ``CE(w, w_hat) + MSE(h, h_hat)`` and the optional
KL term of the VAE variant (Appendix D.1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ldlm.config import AutoencoderConfig
from ldlm.perceiver import PerceiverResampler
from ldlm.transformer import SelfAttentionResampler, TransformerBlock, key_padding_bias


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
        if not self.variational:
            return out, None
        mean, logvar = out.chunk(2, dim=-1)
        return mean, logvar.clamp(-30.0, 20.0)

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


# ---------------------------------------------------------------------- training signals (Sec. 4.2.2)


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


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)), summed over (N, d) and averaged over the batch (App. D.1)."""
    return 0.5 * (mean**2 + logvar.exp() - logvar - 1).sum(dim=(1, 2)).mean()


def token_cross_entropy(
    head: nn.Linear,
    h_hat: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    *,
    positions: int,
    negatives: int,
    generator: torch.Generator,
    detach_head: bool = False,
) -> torch.Tensor:
    """CE(w, D_w(h_hat)) over real positions; optionally on a random subset of positions (``positions``)
    and over a sampled softmax of the batch's target classes plus ``negatives`` random classes (drawn with
    replacement; ``negatives >= vocab`` means the exact softmax).

    The full-vocabulary head dominates a CPU step (30k classes); the sampled variant is an engineering
    option beyond the paper (0/0 = exact CE over all positions and the whole vocabulary).
    ``detach_head`` keeps the head fixed (no gradient reaches it).
    """
    weight, bias = (head.weight.detach(), head.bias.detach()) if detach_head else (head.weight, head.bias)
    flat_h = h_hat[mask.bool()]  # (P, D)
    flat_t = targets[mask.bool()]  # (P,)
    if positions and flat_t.numel() > positions:
        pick = torch.randperm(flat_t.numel(), generator=generator)[:positions].to(flat_t.device)
        flat_h, flat_t = flat_h[pick], flat_t[pick]
    if not negatives or negatives >= weight.shape[0]:
        return F.cross_entropy(F.linear(flat_h, weight, bias), flat_t)
    vocab = weight.shape[0]
    noise = torch.randint(vocab, (negatives,), generator=generator).to(flat_t.device)
    classes = torch.unique(torch.cat([flat_t, noise]))  # sorted
    logits = flat_h @ weight[classes].T + bias[classes]
    return F.cross_entropy(logits, torch.searchsorted(classes, flat_t))


@torch.no_grad()
def centroid_head_(head: nn.Linear, h: torch.Tensor, targets: torch.Tensor) -> int:
    """Initialise ``head`` as a nearest-class-mean classifier on (P, D) features; returns #classes seen.

    logits_c = s (h . mu_c - |mu_c|^2 / 2) ranks classes by Euclidean distance to their mean; the scale s
    (a temperature) is chosen on the same features to minimise the cross-entropy, so the head's first
    gradients have a sensible size. Unseen classes get zero weights and a bias below every seen class's.
    """
    vocab, dim = head.weight.shape
    h = h.float()
    sums = torch.zeros(vocab, dim).index_add_(0, targets, h)
    counts = torch.bincount(targets, minlength=vocab).float()
    seen = counts > 0
    means = sums / counts.clamp_min(1).unsqueeze(1)
    bias = -0.5 * (means**2).sum(1)
    classes = seen.nonzero().squeeze(1)
    probe = torch.randperm(h.shape[0], generator=torch.Generator().manual_seed(0))[:4096]
    logits = h[probe] @ means[classes].T + bias[classes]  # (P', C_seen)
    labels = torch.searchsorted(classes, targets[probe])
    scales = torch.logspace(-3, 1, 41)
    best = min(scales.tolist(), key=lambda sc: F.cross_entropy(logits * sc, labels).item())
    bias = bias * best
    head.weight.copy_(means * best)
    head.bias.copy_(torch.where(seen, bias, bias[seen].min() - 10.0))
    return int(seen.sum())
