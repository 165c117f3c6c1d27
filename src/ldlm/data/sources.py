"""Where a training stage gets its rows: token ids and masks, and the frozen encoder's features h when cached.

A :class:`FeatureSource` holds one row per text (padded, COSMOS) or per packed chunk (:class:`PackedFeatureSource`,
the LDLM presets), or reads rows from a token file (:class:`StreamedSource`, ``data.streaming``); a
:class:`RowSubset` reads some rows of another source (COSMOS's diffusion stage: :func:`diffusion_sources`).
:func:`normalized_features` turns a batch into ``(ids, mask, h)`` with h normalised by the model
(:meth:`~ldlm.pipeline.LatentDiffusionLM.normalize_features`), running E_h when h is not cached.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from ldlm.config import DataConfig
from ldlm.data.batches import BatchStream
from ldlm.data.features import FeatureSet, build_features, cached_features
from ldlm.data.texts import RunTexts, diffusion_texts, load_run_texts, require_training_texts
from ldlm.data.token_file import TokenRows, streamed_corpus
from ldlm.data.tokenize import packed_tokens, tokenize_texts

if TYPE_CHECKING:
    from ldlm.config import RunConfig
    from ldlm.pipeline import LatentDiffusionLM

log = logging.getLogger(__name__)


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


class RowSubset(FeatureSource):
    """Rows ``rows`` of ``parent``, in that order, read through it: a view (no encoding, no cache entry of its own)."""

    def __init__(self, parent: FeatureSource, rows: Sequence[int]):
        self.parent, self.rows = parent, torch.as_tensor(list(rows), dtype=torch.long)
        self.cached = parent.cached
        self.ids, self.mask = parent.ids[self.rows], parent.mask[self.rows]

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.parent.batch(self.rows[torch.as_tensor(indices, dtype=torch.long)])


def ordered_rows(whole: Sequence[str], part: Sequence[str]) -> list[int] | None:
    """The positions in ``whole`` of the items of ``part`` when ``part`` is an ordered sub-list of it (a repeated
    text takes its earliest free position), else None."""
    rows: list[int] = []
    for i, text in enumerate(whole):
        if len(rows) == len(part):
            break
        if text == part[len(rows)]:
            rows.append(i)
    return rows if len(rows) == len(part) else None


def subset_source(model: LatentDiffusionLM, parent_texts: list[str], texts: list[str], cache: bool) -> FeatureSource:
    """Rows of ``texts`` as a :class:`RowSubset` of the cached :class:`FeatureSource` of ``parent_texts`` when
    ``texts`` is an ordered sub-list of them and their cache entry exists: same rows, no re-encoding, no new entry.
    Otherwise (h uncached, E_h trainable, no such entry, not a sub-list) ``FeatureSource(model, texts, cache)``."""
    if FeatureSource.cacheable(model, cache) and parent_texts != texts:
        rows = ordered_rows(parent_texts, texts)
        if rows is not None and cached_features(model.encoder, parent_texts, model.max_length) is not None:
            return RowSubset(FeatureSource(model, parent_texts, cache), rows)  # a cache hit
    return FeatureSource(model, texts, cache)


def diffusion_sources(
    model: LatentDiffusionLM, data: RunTexts, cfg: RunConfig
) -> tuple[FeatureSource, FeatureSource | None]:
    """(train, held-out or None when no held-out text is left) rows of COSMOS's diffusion stage: the texts of
    :func:`~ldlm.data.texts.diffusion_texts` (all, or the full windows), in that order, read from the autoencoder
    stage's feature cache entries (``data.autoencoder_texts`` and ``data.valid``) instead of re-encoded."""
    train_texts, valid_texts = diffusion_texts(model, data, cfg)
    cache = cfg.data.cache_features
    train = subset_source(model, data.autoencoder_texts, train_texts, cache)
    valid = subset_source(model, data.valid, valid_texts, cache) if valid_texts else None
    log.info("diffusion rows: %s", "rows of the autoencoder's features" if isinstance(train, RowSubset) else "encoded")
    return train, valid


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
