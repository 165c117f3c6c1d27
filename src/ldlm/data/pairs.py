"""Source/target pairs for conditional generation: shared-folder files, hub datasets of the papers, local JSON lines.

A row becomes a pair through a *source template* over its fields (``"{answer} [SEP] {context}"`` turns a
question-generation triple into a source) and a *target field*. Every row is checked: a missing field or an empty
source/target is a :class:`DatasetError` naming the row and the setting to change, never a later crash.
"""

from __future__ import annotations

import logging
import string
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ldlm.data.registry import (
    DatasetError,
    find_data_dir,
    hub_datasets_module,
    iter_json_rows,
    split_texts,
    subset_texts,
)

log = logging.getLogger(__name__)

__all__ = ["PAIR_DATASETS", "PairSet", "load_pairs", "split_pairs"]


@dataclass(frozen=True)
class PairDataset:
    """Where a pair dataset lives (shared-folder files or a hub id) and its default source template/target field."""

    description: str
    source_template: str
    target_field: str
    files: tuple[str, ...] = ()  # relative to the shared data folder
    hub: tuple[str, str | None, str] | None = None  # (hub id, config, split)
    flatten: Callable[[dict], dict | None] | None = None  # hub row -> flat row (None: skip the row)


def _squad_row(row: dict) -> dict | None:
    """SQuAD 2.0 reversed: (context, first answer) -> question; unanswerable questions are skipped."""
    answers = row.get("answers", {}).get("text") or []
    return {"context": row["context"], "answer": answers[0], "question": row["question"]} if answers else None


PAIR_DATASETS: dict[str, PairDataset] = {
    "qqp": PairDataset(
        "QQP paraphrase pairs (DiffuSeq), 4,048 from the shared folder",
        "{source}",
        "target",
        files=("qqp/valid.jsonl", "qqp/test.jsonl"),
    ),
    "xsum": PairDataset(
        "801 XSum article -> summary pairs from the shared folder", "{source}", "target", files=("xsum/pairs.jsonl",)
    ),
    "quoref-qg": PairDataset(
        "6,000 Quoref (context, answer) -> question triples from the shared folder",
        "{answer} [SEP] {context}",
        "question",
        files=("quoref_qg/triples.jsonl",),
    ),
    "xsum-hub": PairDataset(
        "XSum summarisation (COSMOS Table 4)", "{document}", "summary", hub=("EdinburghNLP/xsum", None, "train")
    ),
    "squad2-qg-hub": PairDataset(
        "SQuAD 2.0 reversed: context + answer -> question (COSMOS Table 4)",
        "{answer} [SEP] {context}",
        "question",
        hub=("rajpurkar/squad_v2", None, "train"),
        flatten=_squad_row,
    ),
    "paradetox-hub": PairDataset(
        "ParaDetox: toxic -> neutral comment (COSMOS Table 4)",
        "{en_toxic_comment}",
        "en_neutral_comment",
        hub=("s-nlp/paradetox", None, "train"),
    ),
}
LOCAL_DEFAULT = PairDataset("a local JSON-lines file", "{source}", "target")


@dataclass
class PairSet:
    """Parallel lists: ``sources[i]`` is the source text of target ``targets[i]``."""

    sources: list[str]
    targets: list[str]

    def __len__(self) -> int:
        return len(self.targets)


def template_fields(template: str) -> list[str]:
    """The ``{field}`` names a source template reads."""
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name]
    except ValueError as err:
        raise DatasetError(f"seq2seq.source_template={template!r} is not a valid template: {err}") from err


def _local_rows(paths: Iterable[Path]) -> Iterator[tuple[str, dict]]:
    for path in paths:
        for lineno, row in iter_json_rows(path):
            yield f"{path}, line {lineno}", row


def _hub_rows(spec: PairDataset) -> Iterator[tuple[str, dict]]:
    hub_id, config, split = spec.hub
    ds = hub_datasets_module(hub_id).load_dataset(hub_id, config, split=split)
    for i, row in enumerate(ds):
        flat = spec.flatten(row) if spec.flatten else row
        if flat is not None:
            yield f"{hub_id} row {i}", flat


def _pair(where: str, row: dict, template: str, fields: list[str], target_field: str) -> tuple[str, str]:
    """(source, target) of one row, or a DatasetError naming the row and the setting to change."""
    for name, setting in [*((f, "seq2seq.source_template") for f in fields), (target_field, "seq2seq.target_field")]:
        if name not in row:
            raise DatasetError(f"{where}: no field {name!r} (found {sorted(row)}); set {setting}")
        if not isinstance(row[name], str):
            raise DatasetError(f"{where}: field {name!r} is {type(row[name]).__name__}, not text")
    source = " ".join(template.format_map({f: row[f] for f in fields}).split())
    target = " ".join(row[target_field].split())
    for what, empty in (("source", not any(row[f].strip() for f in fields)), ("target", not target)):
        if empty:
            raise DatasetError(f"{where}: empty {what}; remove the row (every pair needs a source and a target)")
    return source, target


def load_pairs(
    name: str,
    *,
    source_template: str | None = None,
    target_field: str | None = None,
    max_pairs: int | None = None,
    seed: int = 0,
) -> PairSet:
    """Pairs of a registered pair dataset (:data:`PAIR_DATASETS`) or a local ``.jsonl`` file, a seeded subset."""
    if name in PAIR_DATASETS:
        spec = PAIR_DATASETS[name]
        if spec.hub is not None:
            rows = _hub_rows(spec)
        else:
            root = find_data_dir()
            paths = [root / f for f in spec.files] if root is not None else []
            if not paths or not all(p.is_file() for p in paths):
                raise DatasetError(
                    f"pair dataset {name!r} needs {', '.join(spec.files)} in the shared data folder "
                    f"({root or 'not found'}): set LDLM_DATA_DIR or pass a .jsonl path"
                )
            rows = _local_rows(paths)
    else:
        path = Path(name).expanduser()
        if path.suffix.lower() != ".jsonl" or not path.is_file():
            raise DatasetError(
                f"unknown pair dataset {name!r}: use one of {', '.join(PAIR_DATASETS)} or an existing .jsonl file "
                "of rows with source/target fields"
            )
        spec, rows = LOCAL_DEFAULT, _local_rows([path])
    template = source_template or spec.source_template
    target_field = target_field or spec.target_field
    fields = template_fields(template)
    pairs = [_pair(where, row, template, fields, target_field) for where, row in rows]
    if not pairs:
        raise DatasetError(f"pair dataset {name!r} has no rows")
    pairs = subset_texts(pairs, max_pairs, seed)
    return PairSet([s for s, _ in pairs], [t for _, t in pairs])


def split_pairs(pairs: PairSet, validation_size: int | float, seed: int) -> tuple[PairSet, PairSet]:
    """Seeded (train, held-out) split; train pairs sharing a source or target text with a held-out pair are dropped."""
    train, valid = split_texts(list(zip(pairs.sources, pairs.targets, strict=True)), validation_size, seed)
    held = {s for s, _ in valid} | {t for _, t in valid}
    kept = [(s, t) for s, t in train if s not in held and t not in held]
    if len(kept) < len(train):
        log.info("dropped %d training pairs that share a text with a held-out pair", len(train) - len(kept))
    if not kept:
        raise DatasetError("no training pairs remain after the held-out split: lower data.validation_size")
    return PairSet(*map(list, zip(*kept, strict=True))), PairSet(*map(list, zip(*valid, strict=True)))
