"""Shared builders for the LDLM tests: the ``ldlm_tiny`` preset, a model on it, synthetic feature batches."""

from __future__ import annotations

import functools

import torch

from ldlm.config import RunConfig, load_config
from ldlm.model.encoders import FrozenEncoder
from ldlm.pipeline import LatentDiffusionLM


def tiny_config(*overrides: str) -> RunConfig:
    return load_config("ldlm_tiny", list(overrides))


@functools.cache
def _encoder(name: str, layer: int) -> FrozenEncoder:
    return FrozenEncoder(name, layer)


def tiny_model(cfg: RunConfig, seed: int = 0) -> LatentDiffusionLM:
    """A fresh LatentDiffusionLM on ``cfg`` (the frozen encoder is loaded once per session)."""
    torch.manual_seed(seed)
    return LatentDiffusionLM(cfg, encoder=_encoder(cfg.encoder.name, cfg.encoder.layer))


def synthetic_batch(model: LatentDiffusionLM, batch: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random token ids and random raw features h (so E_h does not run): ids/mask (B, L), h (B, L, D)."""
    g = torch.Generator().manual_seed(seed)
    length = model.max_length
    return {
        "input_ids": torch.randint(model.encoder.vocab_size, (batch, length), generator=g),
        "attention_mask": torch.ones(batch, length, dtype=torch.long),
        "h": torch.randn(batch, length, model.encoder.hidden_size, generator=g),
    }
