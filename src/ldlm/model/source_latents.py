"""Source texts -> source latents with the model's own frozen encoder and autoencoder (COSMOS App. C.1).

A source of up to ``seq2seq.source_max_length`` tokens runs through E_h once; its normalised features are cut into
windows of ``encoder.max_length`` positions (the autoencoder's L), each compressed by E_z to N latents and
standardised like targets. Windows with no real token are masked, so the denoiser never attends to source padding.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ldlm.data.tokenize import tokenize_texts

if TYPE_CHECKING:
    from ldlm.config import RunConfig
    from ldlm.pipeline import LatentDiffusionLM

log = logging.getLogger(__name__)


def source_windows(cfg: RunConfig) -> int:
    """How many autoencoder windows of ``encoder.max_length`` tokens cover ``seq2seq.source_max_length``."""
    return math.ceil(cfg.seq2seq.source_max_length / cfg.encoder.max_length)


def num_source_latents(cfg: RunConfig) -> int:
    """S = windows x N: the source-latent positions the condition encoder reads."""
    return source_windows(cfg) * cfg.autoencoder.num_latents


def check_sources(sources: list[str]) -> None:
    """A ValueError for a non-list, an empty list or an empty source, before any model runs."""
    if isinstance(sources, str) or not sources:
        raise ValueError("sources must be a non-empty list of texts")
    for i, text in enumerate(sources):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"source {i} is empty (or not text): every source needs text")


def tokenize_sources(model: LatentDiffusionLM, sources: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sources -> ids, mask (n, source_max_length); longer ones are truncated and reported once."""
    check_sources(sources)
    length = model.cfg.seq2seq.source_max_length
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reported below, with the setting to change
        tok = tokenize_texts(model.encoder.tokenizer, sources, length)
    if tok.num_truncated:
        log.warning(
            "%d of %d sources are longer than seq2seq.source_max_length=%d tokens: truncated to their first %d "
            "(raise seq2seq.source_max_length to keep more)",
            tok.num_truncated,
            len(sources),
            length,
            length,
        )
    return tok.input_ids, tok.attention_mask


@torch.inference_mode()
def window_latents(model: LatentDiffusionLM, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised features h (B, Ls, D), mask (B, Ls) -> standardised latents (B, C*N, d), mask (B, C*N);
    h is zero-padded to C windows of L positions."""
    length, c = model.max_length, source_windows(model.cfg)
    pad = c * length - h.shape[1]
    h, mask = F.pad(h, (0, 0, 0, pad)), F.pad(mask, (0, pad))
    b, _, dim = h.shape
    z = model.autoencoder.encode(h.reshape(b * c, length, dim), mask.reshape(b * c, length))  # (B*C, N, d)
    z = model.normalize_latents(z).reshape(b, c * z.shape[1], z.shape[2])
    window_real = mask.reshape(b, c, length).any(-1)  # (B, C)
    return z, window_real.repeat_interleave(model.cfg.autoencoder.num_latents, dim=1).long()


@torch.inference_mode()
def encode_sources(
    model: LatentDiffusionLM, sources: list[str], batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Source texts -> standardised source latents (n, S, d) and their mask (n, S), on the model's device."""
    ids, mask = tokenize_sources(model, sources)
    zs, masks = [], []
    for start in range(0, len(sources), batch_size):
        i, m = ids[start : start + batch_size].to(model.device), mask[start : start + batch_size].to(model.device)
        z, zm = window_latents(model, model.features(i, m), m)
        zs.append(z)
        masks.append(zm)
    return torch.cat(zs), torch.cat(masks)
