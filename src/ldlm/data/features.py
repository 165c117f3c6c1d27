"""On-disk cache of frozen-encoder features ``h``: computed once per (encoder, layer, max_length, texts).

The encoder never trains, so ``h`` is a pure function of the text; caching it as a float16 memmap turns
every epoch after the first (and every later run) into a disk read instead of an encoder forward pass.

Layout of one entry ``<cache_dir>/<key>/``: ``features-00000.npy``, ``features-00001.npy``, ... float16 raw
``h`` (zero at pads) in shards of at most ``SHARD_BYTES`` (rows split in order, so (n, L, D) on disk in pieces a
file system and a memory map handle well), ``input_ids.npy`` and ``attention_mask.npy`` (n, L) int64, and
``meta.json``, written last, which lists the shards (entries of format 1 without a list hold one
``features.npy``). Entries are built in a temporary directory and renamed into place, so readers never see a
half-written entry; a builder holds ``<cache_dir>/.lock-<key>`` meanwhile, so a second process asking for the
same entry waits for it instead of encoding the same texts again.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ldlm.data.tokenize import TokenizedTexts, appended_end_token, packed_tokens, tokenize_texts
from ldlm.storage.resources import CACHE_DIR

if TYPE_CHECKING:
    from ldlm.model.encoders import FrozenEncoder

__all__ = [
    "FeatureCacheError",
    "FeatureSet",
    "build_features",
    "cache_key",
    "cached_features",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the entry layout or the way h is computed changes
_STALE_TMP_SECONDS = 24 * 3600  # leftovers of crashed builds older than this are removed
SHARD_BYTES = 1 << 30  # features per shard file


class FeatureCacheError(RuntimeError):
    """Features could not be computed or stored."""


class _CorruptEntry(Exception):
    """A cache entry exists but is incomplete or inconsistent."""


def cache_key(
    encoder_name: str,
    encoder_path: str | os.PathLike,
    layer: int,
    max_length: int,
    texts: Sequence[str],
    *,
    packing: bool = False,
    end_token: int | None = None,
    prefix_bos: bool = False,
) -> str:
    """16 hex chars of sha256 over the encoder, layer, max_length, a fingerprint of the texts (and packing)."""
    text_hash = hashlib.sha256()
    for i, text in enumerate(texts):  # == sha256("\x00".join(texts)) without building the joined string
        if i:
            text_hash.update(b"\x00")
        text_hash.update(text.encode("utf-8"))
    payload = {
        "format_version": FORMAT_VERSION,
        "encoder": encoder_name,
        "encoder_path": str(encoder_path),
        "layer": int(layer),
        "max_length": int(max_length),
        "num_texts": len(texts),
        "texts": text_hash.hexdigest(),
    }
    if packing:  # only when set, so the keys of padded entries stay as they were
        payload["packing"] = True
    if end_token is not None:  # padded rows of GPT-2/Llama tokenizers end in an appended EOS (since 2026-11-29)
        payload["end_token"] = int(end_token)
    if prefix_bos:  # h read after a prepended BOS (encoder.prefix_bos)
        payload["prefix_bos"] = True
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class FeatureSet:
    """Cached features of a text list: ids/mask in memory, raw ``h`` as a read-only float16 memmap."""

    input_ids: torch.Tensor  # (n, L) int64
    attention_mask: torch.Tensor  # (n, L) int64
    features: np.ndarray | ShardedFeatures  # (n, L, D) float16 memmap(s) of raw h, zero at padded positions
    key: str
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.features.shape[-1]

    @property
    def num_truncated(self) -> int:
        return int(self.meta.get("num_truncated", 0))

    def batch(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        """Rows ``indices`` as ``input_ids``/``attention_mask`` (B, L) and ``h`` (B, L, D) float32."""
        if isinstance(indices, torch.Tensor):
            indices = indices.cpu().numpy()
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        t_idx = torch.from_numpy(idx)
        return {
            "input_ids": self.input_ids[t_idx],
            "attention_mask": self.attention_mask[t_idx],
            "h": torch.from_numpy(np.asarray(self.features[idx], dtype=np.float32)),
        }

    # Pickle (DataLoader workers under spawn) by path: a memmap would otherwise be copied into memory.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["features"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.features = _open_features(Path(self.path), self.meta)


class ShardedFeatures:
    """Shards (n_i, L, D) concatenated along rows, indexable like one (n, L, D) array (int, slice, index array)."""

    def __init__(self, shards: list[np.ndarray]):
        self.shards = shards
        self.offsets = np.cumsum([0] + [len(s) for s in shards])
        self.shape = (int(self.offsets[-1]), *shards[0].shape[1:])
        self.dtype = shards[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: int | slice | Sequence[int] | np.ndarray) -> np.ndarray:
        if isinstance(key, int | np.integer):
            row = int(key) % self.shape[0]
            shard = int(np.searchsorted(self.offsets, row, side="right")) - 1
            return self.shards[shard][row - self.offsets[shard]]
        idx = np.arange(self.shape[0])[key] if isinstance(key, slice) else np.asarray(key, dtype=np.int64) % len(self)
        out = np.empty((len(idx), *self.shape[1:]), dtype=self.dtype)
        which = np.searchsorted(self.offsets, idx, side="right") - 1
        for shard in np.unique(which):
            sel = which == shard
            out[sel] = self.shards[shard][idx[sel] - self.offsets[shard]]
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.concatenate(self.shards).astype(dtype or self.dtype, copy=False)


def _open_features(path: Path, meta: dict) -> np.ndarray | ShardedFeatures:
    """The memmap of a one-shard (or format-1 ``features.npy``) entry, else the shards joined."""
    names = [s["file"] for s in meta["shards"]] if "shards" in meta else ["features.npy"]
    shards = [np.load(path / name, mmap_mode="r") for name in names]
    return shards[0] if len(shards) == 1 else ShardedFeatures(shards)


# --- reading and writing entries -------------------------------------------------------------------------


def _open_entry(path: Path, key: str, num_texts: int, max_length: int, hidden_size: int) -> FeatureSet:
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        raise _CorruptEntry("no meta.json")
    try:
        meta = json.loads(meta_file.read_text())
        features = _open_features(path, meta)
        input_ids = np.load(path / "input_ids.npy")
        attention_mask = np.load(path / "attention_mask.npy")
    except (OSError, ValueError) as e:
        raise _CorruptEntry(f"unreadable: {e}") from e
    expected = (num_texts, max_length, hidden_size)
    problems = [
        f"{what} is {got}, expected {want}"
        for what, got, want in [
            ("meta key", meta.get("key"), key),
            ("meta shape", tuple(meta.get("shape", ())), expected),
            ("features shape", features.shape, expected),
            ("features dtype", features.dtype, np.dtype(np.float16)),
            ("input_ids shape", input_ids.shape, expected[:2]),
            ("attention_mask shape", attention_mask.shape, expected[:2]),
        ]
        if got != want
    ]
    if problems:
        raise _CorruptEntry("; ".join(problems))
    return FeatureSet(
        input_ids=torch.from_numpy(input_ids.astype(np.int64, copy=False)),
        attention_mask=torch.from_numpy(attention_mask.astype(np.int64, copy=False)),
        features=features,
        key=key,
        path=path,
        meta=meta,
    )


def _module_device(module: torch.nn.Module) -> torch.device:
    for t in itertools.chain(module.parameters(), module.buffers()):
        return t.device
    return torch.device("cpu")


def _encode_shard(
    file: Path, encoder: FrozenEncoder, tokens: TokenizedTexts, lo: int, hi: int, batch_size: int, bar: tqdm
) -> None:
    """Raw h of rows [lo, hi) as one float16 (hi - lo, L, D) .npy file, zero at pads."""
    length, dim = tokens.input_ids.shape[1], encoder.hidden_size
    features = np.lib.format.open_memmap(file, mode="w+", dtype=np.float16, shape=(hi - lo, length, dim))
    device = _module_device(encoder)
    with torch.inference_mode():
        for start in range(lo, hi, batch_size):
            end = min(start + batch_size, hi)
            mask = tokens.attention_mask[start:end]
            # Right padding: positions past the batch's longest text are pads, skip computing them.
            used = max(int(mask.sum(1).max()), 1)
            ids_d = tokens.input_ids[start:end, :used].to(device)
            mask_d = mask[:, :used].to(device)
            h = encoder(ids_d, mask_d).float() * mask_d[..., None]  # (B, used, D), zero at pads
            h16 = h.to(torch.float16)
            if not torch.isfinite(h16).all():
                raise FeatureCacheError(
                    f"hidden states of {encoder.name!r} layer {encoder.layer} exceed the float16 range "
                    f"(max |h| = {h.abs().max().item():.3g}); the float16 feature cache cannot store them"
                )
            features[start - lo : end - lo, :used] = h16.cpu().numpy()
            features[start - lo : end - lo, used:] = 0
            bar.update(end - start)
    features.flush()
    del features


def _write_entry(
    tmp: Path,
    encoder: FrozenEncoder,
    tokens: TokenizedTexts,
    key: str,
    max_length: int,
    batch_size: int,
    progress: bool,
    *,
    shard_bytes: int = SHARD_BYTES,
) -> None:
    n, length = tokens.input_ids.shape
    dim = encoder.hidden_size
    shard_rows = max(1, shard_bytes // (length * dim * 2))
    shards = []
    with tqdm(total=n, desc="encoding features", unit="text", disable=not progress) as bar:
        for lo in range(0, n, shard_rows):
            hi = min(n, lo + shard_rows)
            shards.append({"file": f"features-{len(shards):05d}.npy", "rows": hi - lo})
            _encode_shard(tmp / shards[-1]["file"], encoder, tokens, lo, hi, batch_size, bar)
    np.save(tmp / "input_ids.npy", tokens.input_ids.numpy())
    np.save(tmp / "attention_mask.npy", tokens.attention_mask.numpy())
    meta = {
        "format_version": FORMAT_VERSION,
        "key": key,
        "shape": [n, length, dim],
        "dtype": "float16",
        "encoder": encoder.name,
        "encoder_path": str(encoder.path),
        "layer": encoder.layer,
        "max_length": max_length,
        "num_truncated": tokens.num_truncated,
        "shards": shards,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))  # last: marks the entry complete


def _remove_dir(path: Path) -> None:
    """Move ``path`` aside, then delete it, so a concurrent builder can rename its entry into place."""
    trash = path.with_name(f".trash-{path.name}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _clean_stale(cache_dir: Path) -> None:
    now = time.time()
    for p in itertools.chain(cache_dir.glob(".tmp-*"), cache_dir.glob(".trash-*")):
        try:
            if now - p.stat().st_mtime > _STALE_TMP_SECONDS:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def build_features(
    encoder: FrozenEncoder,
    texts: Sequence[str],
    max_length: int,
    *,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 64,
    progress: bool = True,
    packing: bool = False,
    shard_bytes: int = SHARD_BYTES,
) -> FeatureSet:
    """Raw frozen-encoder features of ``texts``, read from ``cache_dir`` (default ``CACHE_DIR/features``)
    when a complete entry exists, else computed in batches and stored there first.

    ``packing``: rows are the texts packed into chunks of ``max_length`` tokens (MDLM protocol, no padding),
    not one padded row per text. ``shard_bytes``: the largest features file of a new entry.
    """
    texts = list(texts)
    if not texts:
        raise ValueError("build_features got no texts")
    cache_dir, key = _entry_key(encoder, texts, max_length, cache_dir, packing)
    final = cache_dir / key
    tokens = packed_tokens(encoder.tokenizer, texts, max_length) if packing else None
    shape_args = (key, len(tokens) if packing else len(texts), max_length, encoder.hidden_size)
    fs = _complete_entry(final, shape_args)
    if fs is not None:
        return fs
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _build_lock(cache_dir, key):
        fs = _complete_entry(final, shape_args)  # built by another process while this one waited
        if fs is not None:
            return fs
        tokens = tokens if packing else tokenize_texts(encoder.tokenizer, texts, max_length)
        return _build_entry(encoder, tokens, final, shape_args, batch_size, progress, shard_bytes)


def cached_features(
    encoder: FrozenEncoder, texts: Sequence[str], max_length: int, *, cache_dir: str | os.PathLike | None = None
) -> FeatureSet | None:
    """The complete cache entry that :func:`build_features` would read for ``texts`` (padded rows), or None when
    there is none: a look-up only, it never encodes."""
    texts = list(texts)
    if not texts:
        return None
    cache_dir, key = _entry_key(encoder, texts, max_length, cache_dir, packing=False)
    return _complete_entry(cache_dir / key, (key, len(texts), max_length, encoder.hidden_size))


def _entry_key(
    encoder: FrozenEncoder, texts: list[str], max_length: int, cache_dir: str | os.PathLike | None, packing: bool
) -> tuple[Path, str]:
    """(cache directory, entry key) of ``texts`` under ``encoder``."""
    cache_dir = Path(cache_dir) if cache_dir is not None else CACHE_DIR / "features"
    end = None if packing else appended_end_token(encoder.tokenizer)
    key = cache_key(
        encoder.name,
        encoder.path,
        encoder.layer,
        max_length,
        texts,
        packing=packing,
        end_token=end,
        prefix_bos=encoder.prefix_bos,
    )
    return cache_dir, key


def _complete_entry(final: Path, shape_args: tuple) -> FeatureSet | None:
    """The cache entry at ``final`` when it exists and is complete; a corrupt one is removed (with a warning)."""
    if not final.exists():
        return None
    try:
        fs = _open_entry(final, *shape_args)
    except _CorruptEntry as e:
        warnings.warn(f"feature cache entry {final} is incomplete or corrupt ({e}): rebuilding it", stacklevel=3)
        _remove_dir(final)
        return None
    logger.info("feature cache hit: %s (%d texts)", final, len(fs))
    return fs


@contextlib.contextmanager
def _build_lock(cache_dir: Path, key: str) -> Iterator[None]:
    """Hold an exclusive lock on ``.lock-<key>`` while building that entry, so a concurrent process waits and
    reuses the entry instead of encoding the same texts again (POSIX ``flock``; released if the holder dies)."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): concurrent builders still end correct via the rename race below
        yield
        return
    lock = cache_dir / f".lock-{key}"
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("another process is building feature cache entry %s; waiting for it", key)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            # Removed before release: a waiter then finds the finished entry; a newcomer that races a failed
            # build may build concurrently, which the rename in _build_entry still resolves correctly.
            lock.unlink(missing_ok=True)
            fcntl.flock(f, fcntl.LOCK_UN)


def _build_entry(
    encoder: FrozenEncoder,
    tokens: TokenizedTexts,
    final: Path,
    shape_args: tuple,
    batch_size: int,
    progress: bool,
    shard_bytes: int,
) -> FeatureSet:
    """Encode ``tokens`` into a temporary directory beside ``final``, then rename it into place."""
    cache_dir, (key, num_rows, max_length, _) = final.parent, shape_args
    _clean_stale(cache_dir)
    tmp = cache_dir / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        logger.info("computing features of %d rows into %s", num_rows, final)
        _write_entry(tmp, encoder, tokens, key, max_length, batch_size, progress, shard_bytes=shard_bytes)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():
                raise
            try:  # a concurrent builder won the race: use its entry if complete, else replace it
                fs = _open_entry(final, *shape_args)
                logger.info("feature cache entry %s was created concurrently; using it", final)
                return fs
            except _CorruptEntry:
                _remove_dir(final)
                os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # no-op after a successful rename
    return _open_entry(final, *shape_args)
