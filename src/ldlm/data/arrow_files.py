"""Local datasets in the ``datasets`` library's own formats: a ``save_to_disk`` directory, an Arrow or a Parquet file.

They are opened memory-mapped through ``datasets`` (Parquet through ``pyarrow``, no cache copy) and read one
text column, ``data.text_field``; nothing here touches the network.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ldlm.data.registry import DatasetError, hub_datasets_module

__all__ = ["ARROW_SUFFIXES", "check_column", "is_arrow_source", "iter_arrow_texts", "open_arrow_dataset"]

ARROW_SUFFIXES = (".arrow", ".parquet")
_SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")  # what save_to_disk leaves


def is_arrow_source(path: Path) -> bool:
    """A ``save_to_disk`` directory, or an existing ``.arrow`` / ``.parquet`` file."""
    if path.is_dir():
        return any((path / m).is_file() for m in _SAVED_MARKERS)
    return path.is_file() and path.suffix.lower() in ARROW_SUFFIXES


def open_arrow_dataset(path: Path, split: str = "train"):
    """The ``datasets.Dataset`` at ``path`` (of a saved ``DatasetDict``: its ``split``, or its only split)."""
    datasets = hub_datasets_module(str(path), needs_hub=False)
    suffix = path.suffix.lower()
    try:
        if path.is_dir():
            ds = datasets.load_from_disk(str(path))
        elif suffix == ".arrow":
            ds = datasets.Dataset.from_file(str(path))
        else:
            import pyarrow.parquet as pq

            ds = datasets.Dataset(pq.read_table(str(path)))
    except (OSError, ValueError) as err:
        raise DatasetError(f"cannot read {path} as a datasets dataset: {err}") from err
    if isinstance(ds, datasets.DatasetDict):
        if split in ds:
            return ds[split]
        if len(ds) == 1:
            return next(iter(ds.values()))
        raise DatasetError(f"{path} holds splits {list(ds)}, not {split!r}: set data.split to one of them")
    return ds


def check_column(ds, field: str, where: str) -> None:
    """A DatasetError naming the columns and ``data.text_field`` when ``field`` is not one of them."""
    if field not in ds.column_names:
        raise DatasetError(
            f"{where} has no column {field!r} (columns: {', '.join(ds.column_names)}): set data.text_field to the "
            "column that holds the text"
        )


def iter_arrow_texts(path: Path, field: str, split: str = "train") -> Iterator[str]:
    """Texts of the column ``field`` in order, a batch at a time (the dataset stays memory-mapped)."""
    ds = open_arrow_dataset(path, split)
    check_column(ds, field, str(path))
    for batch in ds.select_columns([field]).iter(batch_size=1024):
        yield from (str(t) for t in batch[field] if t is not None)
