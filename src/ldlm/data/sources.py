"""Where a training stage gets its rows: token ids and masks, and the frozen encoder's features h when cached.

A :class:`FeatureSource` holds one row per text (padded, COSMOS) or per packed chunk (:class:`PackedFeatureSource`,
the LDLM presets), or reads rows from a token file (:class:`StreamedSource`, ``data.streaming``).
:func:`normalized_features` turns a batch into ``(ids, mask, h)`` with h normalised by the model
(:meth:`~ldlm.pipeline.LatentDiffusionLM.normalize_features`), running E_h when h is not cached.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ldlm.config import DataConfig
from ldlm.data.batches import BatchStream
from ldlm.data.features import FeatureSet, build_features
from ldlm.data.texts import load_run_texts, require_training_texts
from ldlm.data.token_file import TokenRows, streamed_corpus
from ldlm.data.tokenize import packed_tokens, tokenize_texts

if TYPE_CHECKING:
    from ldlm.pipeline import LatentDiffusionLM


class FeatureSource:
    """Batches of ``input_ids``/``attention_mask`` and, when cached, raw features ``h`` (B, L, D)."""

    def __init__(self, model: LatentDiffusionLM, texts: list[str], cache: bool):
        self.cached: FeatureSet | None = None
        if self.cacheable(model, cache):
            self.cached = build_features(model.encoder, texts, model.max_length)
            self.ids, self.mask = self.cached.input_ids, self.cached.attention_mask
        else:
            tok = tokenize_texts(model.encoder.tokenizer, texts, model.max_length)
            self.ids, self.mask = tok.input_ids, tok.attention_mask

    @staticmethod
    def cacheable(model: LatentDiffusionLM, cache: bool) -> bool:
        """Whether h may be cached: asked for, and E_h frozen (a trainable E_h's h changes every step)."""
        return cache and not model.encoder.trainable

    def __len__(self) -> int:
        return self.ids.shape[0]

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.cached is not None:
            return self.cached.batch(indices)
        return {"input_ids": self.ids[indices], "attention_mask": self.mask[indices]}

    def raw_features(self, model: LatentDiffusionLM, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unnormalised h: (B, L, D) and mask: (B, L) for ``indices`` (cached, or computed by E_h)."""
        batch = self.batch(indices)
        mask = batch["attention_mask"]
        return (batch["h"] if "h" in batch else model.encoder(batch["input_ids"], mask)), mask

    def batches(self, batch_size: int, seed: int) -> BatchStream:
        return BatchStream(len(self), batch_size, self.batch, seed)


class PackedFeatureSource(FeatureSource):
    """A :class:`FeatureSource` whose rows are chunks of ``max_length`` tokens packed from the texts (MDLM
    protocol: no special tokens, EOS between texts, no padding) instead of one padded row per text."""

    def __init__(self, model: LatentDiffusionLM, texts: list[str], cache: bool):
        encoder, length = model.encoder, model.max_length
        cache = self.cacheable(model, cache)
        self.cached = build_features(encoder, texts, length, packing=True) if cache else None
        rows = self.cached if cache else packed_tokens(encoder.tokenizer, texts, length)
        self.ids, self.mask = rows.input_ids, rows.attention_mask


class StreamedSource(FeatureSource):
    """Training rows read from a token file (``data.streaming``): packed chunks; E_h runs on each batch."""

    def __init__(self, rows: TokenRows):
        self.cached, self.rows = None, rows

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.rows.batch(indices)


def feature_source(model: LatentDiffusionLM, texts: list[str], dc: DataConfig) -> FeatureSource:
    """Rows of ``texts`` as ``data.packing`` asks: packed chunks (LDLM presets) or padded texts (COSMOS)."""
    source = PackedFeatureSource if dc.packing else FeatureSource
    return source(model, texts, dc.cache_features)


def training_sources(model: LatentDiffusionLM, dc: DataConfig) -> tuple[FeatureSource, FeatureSource, int, int]:
    """(train rows, held-out rows, #train texts, #held-out texts): texts in memory, or a token-file stream."""
    if dc.streaming:
        valid_texts, rows = streamed_corpus(
            dc.dataset,
            model.encoder.tokenizer,
            model.max_length,
            field=dc.text_field,
            split=dc.split,
            validation=int(dc.validation_size),
            max_texts=dc.max_texts,
        )
        return StreamedSource(rows), feature_source(model, valid_texts, dc), rows.meta["texts"], len(valid_texts)
    data = load_run_texts(dc)
    require_training_texts(data, dc)
    train, valid = feature_source(model, data.train, dc), feature_source(model, data.valid, dc)
    return train, valid, len(data.train), len(data.valid)


def fit_feature_stats(model: LatentDiffusionLM, source: FeatureSource, max_rows: int) -> None:
    """Per-feature mean/std of the frozen encoder's h over the first ``max_rows`` rows of ``source``."""
    n = min(len(source), max_rows)
    model.encoder.fit_stats(source.raw_features(model, torch.arange(s, min(n, s + 64))) for s in range(0, n, 64))


def normalized_features(model: LatentDiffusionLM, batch: dict, device: torch.device, *, grad: bool = False) -> tuple:
    """(ids, mask, h) on ``device`` with h normalised and zeroed at padding; runs E_h if h is not cached.
    ``grad``: h keeps its graph to a trainable E_h (the LDLM joint stage only); otherwise h is a constant."""
    ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    if "h" in batch:
        raw = batch["h"].to(device)
    else:  # no cache: run E_h now
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            raw = model.encoder(ids, mask)
    return ids, mask, model.normalize_features(raw, mask)
