"""Token files: a text stream tokenised once into a flat binary file of ids (nanoGPT's ``train.bin``), read back as
rows of ``length`` tokens, so that training on a corpus larger than memory holds only the current batch.

The packing is the MDLM protocol of :func:`ldlm.data.tokenize.pack_texts` (no special tokens, a separator after
each text). Rows are read with ``os.pread`` rather than through ``np.memmap``: pages that a memmap touches count
as the process's resident memory until the kernel reclaims them, so a pass over a big file would look like
unbounded RSS; positioned reads keep only the rows asked for.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ldlm.data.registry import DatasetError
from ldlm.data.streaming import batched, stream_texts
from ldlm.data.tokenize import text_separator
from ldlm.storage.io import atomic_write_json
from ldlm.storage.resources import CACHE_DIR
from ldlm.training import distributed

FORMAT_VERSION = 1


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def write_token_file(texts: Iterable[str], tokenizer, path: str | Path, *, batch_texts: int = 256) -> dict:
    """Tokenise ``texts`` (any iterable, consumed once) into ``path``; returns the metadata written beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = np.dtype(np.uint16 if len(tokenizer) <= 1 << 16 else np.uint32)
    sep = text_separator(tokenizer)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tokens = count = 0
    try:
        with tmp.open("wb") as f:
            for chunk in batched(iter(texts), batch_texts):
                rows = tokenizer(chunk, add_special_tokens=False, verbose=False)["input_ids"]
                flat = np.fromiter(itertools.chain.from_iterable((*r, sep) for r in rows), dtype=dtype)
                f.write(flat.tobytes())
                tokens, count = tokens + flat.size, count + len(chunk)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    meta = {"format_version": FORMAT_VERSION, "dtype": dtype.name, "tokens": tokens, "texts": count, "sep": sep}
    atomic_write_json(_meta_path(path), meta)  # last: marks the file complete
    return meta


class TokenRows:
    """Rows of ``length`` consecutive tokens of a token file (the last partial row is dropped); picklable."""

    def __init__(self, path: str | Path, length: int):
        self.path, self.length = Path(path), length
        try:
            self.meta = json.loads(_meta_path(self.path).read_text())
        except (OSError, ValueError) as err:
            raise DatasetError(f"token file {self.path} is incomplete: its metadata is unreadable") from err
        self.dtype = np.dtype(self.meta["dtype"])
        size = self.path.stat().st_size if self.path.is_file() else None
        if size != self.meta["tokens"] * self.dtype.itemsize:
            raise DatasetError(f"token file {self.path} has {size} bytes, expected {self.meta['tokens']} tokens")
        self.num_rows = self.meta["tokens"] // length
        if self.num_rows == 0:
            raise DatasetError(f"token file {self.path} holds {self.meta['tokens']} tokens, less than one row")
        self._fd = os.open(self.path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.num_rows

    def rows(self, indices: Iterable[int] | torch.Tensor) -> torch.Tensor:
        """input_ids: (B, length) int64 of the given row numbers (one positioned read per row)."""
        idx = torch.as_tensor(indices).reshape(-1).tolist()
        nbytes = self.length * self.dtype.itemsize
        out = np.empty((len(idx), self.length), dtype=self.dtype)
        for i, row in enumerate(idx):
            if not 0 <= row < self.num_rows:
                raise IndexError(f"row {row} of a token file with {self.num_rows} rows")
            out[i] = np.frombuffer(os.pread(self._fd, nbytes, row * nbytes), dtype=self.dtype)
        return torch.from_numpy(out.astype(np.int64))

    def batch(self, indices: Iterable[int] | torch.Tensor) -> dict[str, torch.Tensor]:
        """``input_ids`` and an all-ones ``attention_mask``: (B, length), like packed chunks."""
        ids = self.rows(indices)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "length": self.length}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["length"])

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)


def _source_stamp(name: str) -> str:
    path = Path(name).expanduser()
    if path.is_file():  # a local file: its identity and version
        st = path.stat()
        return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    return name


def streamed_corpus(
    name: str,
    tokenizer,
    length: int,
    *,
    field: str = "text",
    split: str = "train",
    validation: int,
    max_texts: int | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[list[str], TokenRows]:
    """(the first ``validation`` texts, rows of the next ``max_texts`` (all) texts from a cached token file).

    The token file is built once per (source, tokenizer, split) by rank 0 while the other processes wait.
    """
    key_src = [FORMAT_VERSION, _source_stamp(name), field, split, tokenizer.name_or_path, len(tokenizer)]
    key = hashlib.sha256(json.dumps([*key_src, validation, max_texts]).encode()).hexdigest()[:16]
    path = Path(cache_dir) if cache_dir is not None else CACHE_DIR / "tokens"
    path = path / f"{key}.bin"
    texts = stream_texts(name, field=field, split=split)
    valid = list(itertools.islice(texts, validation))
    if len(valid) < validation:
        raise DatasetError(f"dataset {name!r} has {len(valid)} texts, fewer than validation_size={validation}")
    if distributed.is_main() and not _meta_path(path).is_file():
        write_token_file(itertools.islice(texts, max_texts), tokenizer, path)
    distributed.barrier()
    return valid, TokenRows(path, length)
