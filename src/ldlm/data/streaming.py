"""Texts one at a time: hub datasets through ``datasets`` streaming, local files line by line.

A corpus larger than memory (OpenWebText, Wikipedia, a big local .jsonl) is never a Python list here: it flows
through :func:`stream_texts` into a token file (:mod:`ldlm.data.token_file`) that training reads row by row.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

from ldlm.data.registry import HUB_DATASETS, DatasetError, hub_datasets_module, iter_file, list_datasets, load_texts


def stream_hub(
    hub_id: str,
    config: str | None = None,
    *,
    split: str = "train",
    field: str = "text",
    data_files: str | list[str] | None = None,
) -> Iterator[str]:
    """``datasets.load_dataset(..., streaming=True)`` rows' ``field``: nothing is downloaded or held whole.
    ``data_files`` reads local files through the same path (``stream_hub("json", data_files="big.jsonl")``)."""
    datasets = hub_datasets_module(hub_id, needs_hub=data_files is None)
    ds = datasets.load_dataset(hub_id, config, split=split, streaming=True, data_files=data_files)
    for i, row in enumerate(ds):
        if field not in row:
            raise DatasetError(f"dataset {hub_id!r}, row {i}: no field {field!r} (found {sorted(row)})")
        yield str(row[field])


def stream_texts(name: str, *, field: str = "text", split: str = "train") -> Iterator[str]:
    """Texts of a registered dataset or a local .jsonl/.txt/.csv file in order, one at a time."""
    if name in HUB_DATASETS:
        hub_id, config = HUB_DATASETS[name]
        return stream_hub(hub_id, config, split=split, field=field)
    if name in list_datasets():  # packaged corpora are small: loaded, then yielded
        return iter(load_texts(name, field=field))
    path = Path(name).expanduser()
    if not path.is_file():
        load_texts(name)  # raises the registry's error with its suggestions
    return iter_file(path, field)


def batched(texts: Iterator[str], size: int) -> Iterator[list[str]]:
    """Lists of up to ``size`` consecutive texts."""
    while chunk := list(itertools.islice(texts, size)):
        yield chunk
