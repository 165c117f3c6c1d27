"""Ablation rows before and after a code change: per-run JSONs kept in an archive dir against the table's current ones.

Usage (issue 21: rows re-run after the diffusion fixes; docs/results.md)::

    python scripts/compare_reruns.py \\
        --pair ldlm_table1=results/ablations/archive/ldlm_table1_prefix \\
        --pair cosmos_table2=results/ablations/archive/cosmos_table2_prefix \\
        --out results/ablations/rerun_vs_prefix.json

For every row with runs on both sides: each metric's mean +- std over training seeds before and after, the seeds
and the sampler of each side, and the commits that trained the new runs. Only seeds present on both sides enter
``paired_seeds`` (the same seed before and after); the means use every run of each side.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from ldlm.evaluation.suite import summarize
from ldlm.storage.io import atomic_write_json

RUN = re.compile(r"^(?P<row>.+)-seed(?P<seed>\d+)\.json$")


def runs(folder: Path) -> dict[str, dict[int, dict]]:
    """``{row: {seed: per-run JSON}}`` of the per-run files in ``folder``."""
    found: dict[str, dict[int, dict]] = {}
    for path in sorted(folder.glob("*-seed*.json")):
        m = RUN.match(path.name)
        if m:
            found.setdefault(m["row"], {})[int(m["seed"])] = json.loads(path.read_text())
    return found


def side(results: dict[int, dict], metrics: list[str]) -> dict:
    """One side of a row: figures over seeds, the seeds, how they sampled and which code trained them."""
    ordered = [results[s] for s in sorted(results)]
    protocol = [r.get("protocol") or {} for r in ordered]
    return {
        "seeds": sorted(results),
        "sampling": sorted({f"{p.get('sampling_steps')} {p.get('sampler')}" for p in protocol}),
        "code": sorted({(r.get("summary", {}).get("code") or {}).get("git_commit") or "unrecorded" for r in ordered}),
        "train_minutes": summarize([r.get("summary", {}).get("train_minutes") for r in ordered]),
        **{m: summarize([r["metrics"].get(m) for r in ordered]) for m in metrics},
    }


def compare(table: str, archive: Path, current: Path) -> dict:
    before, after = runs(archive), runs(current / table)
    rows = {}
    for row in sorted(set(before) & set(after)):
        metrics = sorted(set().union(*(r["metrics"] for r in [*before[row].values(), *after[row].values()])))
        rows[row] = {
            "label": next(iter(after[row].values())).get("label", row),
            "paired_seeds": sorted(set(before[row]) & set(after[row])),
            "before": side(before[row], metrics),
            "after": side(after[row], metrics),
        }
    return {"archive": str(archive), "current": str(current / table), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pair", action="append", required=True, help="TABLE=ARCHIVE_DIR (per-run JSONs before)")
    parser.add_argument("--results", default="results/ablations", help="folder of the tables' current runs")
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args()
    tables = {}
    for pair in args.pair:
        table, _, folder = pair.partition("=")
        if not folder or not Path(folder).is_dir():
            parser.error(f"--pair {pair!r}: expected TABLE=ARCHIVE_DIR with an existing folder")
        tables[table] = compare(table, Path(folder), Path(args.results))
    atomic_write_json(Path(args.out), {"tables": tables})
    for table, t in tables.items():
        for row, r in t["rows"].items():
            b, a = r["before"], r["after"]
            cells = ", ".join(
                f"{m} {b[m]['mean']:.4g}->{a[m]['mean']:.4g}"
                for m in ("judge_ppl", "mauve", "entropy", "heldout_token_accuracy")
                if m in a and a[m]["mean"] is not None and b[m]["mean"] is not None
            )
            print(f"{table}/{row} seeds {b['seeds']}->{a['seeds']}: {cells}")


if __name__ == "__main__":
    main()
