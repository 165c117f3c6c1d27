"""Texts one at a time: hub datasets through ``datasets`` streaming, local files line by line or batch by batch.

A corpus larger than memory (OpenWebText, Wikipedia, a big local .jsonl) is never a Python list here: it flows
through :func:`stream_texts` into a token file (:mod:`ldlm.data.token_file`) that training reads row by row.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

from ldlm.data.arrow_files import is_arrow_source, iter_arrow_texts
from ldlm.data.registry import (
    HUB_DATASETS,
    DatasetError,
    hub_datasets_module,
    iter_file,
    list_datasets,
    load_texts,
    parse_hub_name,
)


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
            raise DatasetError(
                f"dataset {hub_id!r}, row {i}: no field {field!r} (columns: {', '.join(sorted(row))}): set "
                "data.text_field to the column that holds the text"
            )
        yield str(row[field])


def stream_texts(name: str, *, field: str = "text", split: str = "train") -> Iterator[str]:
    """Texts of a registered dataset, a hub dataset ``hub:owner/name[:config]``, a local .jsonl/.txt/.csv file or a
    local ``datasets`` dataset (save_to_disk directory, .arrow, .parquet) in order, one at a time."""
    hub = HUB_DATASETS.get(name) or parse_hub_name(name)
    if hub is not None:
        return stream_hub(hub[0], hub[1], split=split, field=field)
    if name in list_datasets():  # packaged corpora are small: loaded, then yielded
        return iter(load_texts(name, field=field))
    path = Path(name).expanduser()
    if is_arrow_source(path):
        return iter_arrow_texts(path, field, split)
    if not path.is_file():
        load_texts(name)  # raises the registry's error with its suggestions
    return iter_file(path, field)


def batched(texts: Iterator[str], size: int) -> Iterator[list[str]]:
    """Lists of up to ``size`` consecutive texts."""
    while chunk := list(itertools.islice(texts, size)):
        yield chunk
