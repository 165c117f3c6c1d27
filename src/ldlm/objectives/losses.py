"""The loss terms both papers share: token cross-entropy L_w (COSMOS Sec. 4.2.2, LDLM Eq. 3), the masked MSE
L_h between h and its reconstruction (COSMOS Sec. 4.2.2, LDLM Eq. 2) and the VAE variant's KL term (App. D.1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ldlm.config import AutoencoderConfig


def masked_mse(h_hat: torch.Tensor, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the real positions of h: (B, L, D) (mask: (B, L), 1 = real) -> scalar."""
    m = mask.unsqueeze(-1).float()
    return ((h_hat - h) ** 2 * m).sum() / (m.sum() * h.shape[-1])


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


def token_loss(
    ae: nn.Module,
    h_hat: torch.Tensor,
    ids: torch.Tensor,
    mask: torch.Tensor,
    ac: AutoencoderConfig,
    step: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """L_w = CE(w, D_w(h_hat)) of the autoencoder ``ae`` (its token blocks, then its head) with the configured
    sampled softmax and head freezing (CPU options); h_hat: (B, L, D), ids/mask: (B, L) -> scalar."""
    return token_cross_entropy(
        ae.head,
        ae.token_features(h_hat, mask),  # D_w's blocks (none unless autoencoder.token_decoder_layers > 0)
        ids,
        mask,
        positions=ac.ce_positions,
        negatives=ac.ce_negatives,
        generator=generator,
        detach_head=ac.freeze_head_steps < 0 or step < ac.freeze_head_steps,
    )
