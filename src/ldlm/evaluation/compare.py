"""One table from several ``ldlm evaluate`` reports of models trained on the same data (e.g. COSMOS vs its AR
baseline): a row per model plus the real-text reference row, refused when the reports' protocols differ."""

from __future__ import annotations

import json
from pathlib import Path

from ldlm.evaluation.suite import METRICS
from ldlm.reporting.writer import reproduce_command
from ldlm.storage.io import atomic_write_json

__all__ = ["compare_reports", "write_comparison"]

# protocol entries that must agree for the rows to be comparable (the judge, the texts, the metrics' settings)
_SAME = ("judge", "num_samples", "seeds", "mauve", "mauve_reference_texts", "word_metrics", "reference_preprocessing")


def compare_reports(reports: dict[str, dict], paths: dict[str, str] | None = None) -> dict:
    """``{name: report}`` -> ``{"rows": {name: {metric: {mean, std}, "train_minutes"}, "reference": ...}, ...}``.
    The reference row is the first report's (all reports score the same held-out texts under the same protocol)."""
    if not reports:
        raise ValueError("nothing to compare: give at least one report")
    names = list(reports)
    first = reports[names[0]]["protocol"]
    for name in names[1:]:
        other = reports[name]["protocol"]
        differ = [k for k in _SAME if first.get(k) != other.get(k)]
        if differ:
            raise ValueError(f"report {name!r} differs from {names[0]!r} in {', '.join(differ)}: not comparable")
    if "reference" in reports:
        raise ValueError("'reference' names the real-text row: call the model something else")
    rows = {}
    for name, rep in reports.items():
        row = {m: {k: rep["model"][m][k] for k in ("mean", "std", "n")} for m in METRICS}
        row["train_minutes"] = (rep.get("training") or {}).get("train_minutes")
        row["collapsed"] = (rep.get("collapse") or {}).get("collapsed")
        row["run"], row["config"] = rep["run"], rep["config"]
        row["sampler"], row["sampling_steps"] = rep["protocol"]["sampler"], rep["protocol"]["sampling_steps"]
        rows[name] = row
    ref = reports[names[0]]["reference"]
    rows["reference"] = {m: {k: ref[m][k] for k in ("mean", "std", "n")} for m in METRICS}
    paths = paths or {}
    return {
        "rows": rows,
        "protocol": {k: first.get(k) for k in _SAME},
        "reports": paths,
        "commands": [reproduce_command(rep, paths.get(name)) for name, rep in reports.items()],
    }


def write_comparison(named_paths: dict[str, str], out: str | Path) -> dict:
    """Read ``{name: report path}``, compare, write the JSON at ``out``; returns the comparison."""
    reports = {name: json.loads(Path(p).read_text()) for name, p in named_paths.items()}
    result = compare_reports(reports, {name: str(p) for name, p in named_paths.items()})
    atomic_write_json(Path(out), result)
    return result
