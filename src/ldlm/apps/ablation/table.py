"""Aggregate an ablation's per-run JSONs into ``OUT_DIR/TABLE.json`` and a Markdown table in ``docs/results.md``.

Every figure is the mean ± sample std (ddof=1) over the training seeds found for the row, and lists the JSON
files it came from. The Markdown block sits between ``<!-- ablate:TABLE:start -->`` and ``<!-- ablate:TABLE:end
-->`` and is replaced in place on every re-run.
"""

from __future__ import annotations

import datetime
import itertools
import re
from pathlib import Path

from ldlm.apps.ablation.curves import mean_probe_curves
from ldlm.apps.ablation.run import plan_runs, read_result, run_key, train_command
from ldlm.apps.ablation.spec import METRICS, AblationSpec, Row
from ldlm.apps.ablation.training import keep_earlier_curves, mean_training_curves
from ldlm.evaluation.suite import summarize
from ldlm.storage.io import atomic_write_text, directory_lock, read_json

__all__ = ["aggregate", "markdown_table", "ordering_agreement", "write_markdown_block"]

_RESULT = re.compile(r"-seed(\d+)\.json$")


def _row_results(spec: AblationSpec, row: Row, out_dir: Path) -> list[tuple[Path, dict]]:
    """The row's per-run JSONs that match the current spec, by seed."""
    found = []
    for path in sorted(Path(out_dir, spec.name).glob(f"{row.name}-seed*.json")):
        result = read_result(path, run_key(spec, row)) if _RESULT.search(path.name) else None
        if result is not None:
            found.append((path, result))
    return sorted(found, key=lambda pr: pr[1]["seed"])


def _welch_p(a: dict, b: dict) -> float | None:
    """Two-sided p-value of Welch's t-test on two rows' seed figures (``summarize`` dicts); None below 2 seeds
    each or when both rows have no spread (identical reruns)."""
    from scipy.stats import ttest_ind_from_stats

    if a["n"] < 2 or b["n"] < 2 or a["std"] == b["std"] == 0:
        return None
    return float(ttest_ind_from_stats(a["mean"], a["std"], a["n"], b["mean"], b["std"], b["n"], equal_var=False).pvalue)


def ordering_agreement(ours: list[dict], paper: list[float | None], alpha: float = 0.05) -> dict:
    """How many pairs of rows (ours measured, paper values distinct) are ordered as in the paper; and the same
    count over the pairs whose seed figures differ at p < ``alpha`` (Welch's t-test), the pairs that seeds resolve.

    ``ours``: per row ``{mean, std, n}`` over training seeds (:func:`ldlm.evaluation.suite.summarize`).
    """
    both = [(o, p) for o, p in zip(ours, paper, strict=True) if o["mean"] is not None and p is not None]
    pairs = [(a, b) for a, b in itertools.combinations(both, 2) if a[1] != b[1]]
    agrees = [(a[0]["mean"] - b[0]["mean"]) * (a[1] - b[1]) > 0 for a, b in pairs]
    p_values = [_welch_p(a[0], b[0]) for a, b in pairs]
    resolved = [agree for agree, p in zip(agrees, p_values, strict=True) if p is not None and p < alpha]
    return {
        "agree": sum(agrees),
        "pairs": len(pairs),
        "resolved_agree": sum(resolved),
        "resolved_pairs": len(resolved),
        "alpha": alpha,
    }


def aggregate(spec: AblationSpec, *, table: str, out_dir: Path, runs_dir: Path, seeds: list[int], command: str) -> dict:
    """The table as a dict: per row the figures over seeds, the paper's, the commands and the source JSONs.
    ``command``: the ``ldlm ablate`` line of the whole table; a row's adds ``--rows NAME``."""
    rows, references, first = [], {}, None  # references: sampling seed -> real-text figures (the same in every row)
    by_row: dict[str, list[dict]] = {}
    for row in spec.rows:
        results = _row_results(spec, row, out_dir)
        by_row[row.name] = [r for _, r in results]
        first = first or next((r for _, r in results if "protocol" in r), None)
        for _, r in results:
            references.setdefault(r["seed"], r.get("reference", {}))
        planned = plan_runs(spec, seeds=seeds, rows=[row], runs_dir=runs_dir, out_dir=out_dir)
        rows.append(
            {
                "name": row.name,
                "label": row.title,
                "runnable": row.runnable,
                "reason": row.reason,
                "note": row.note,
                "same_as": row.same_as,
                "overrides": spec.config_overrides(row),
                "command": f"{command} --rows {row.name}" if row.runnable else None,
                "train_commands": {p.seed: train_command(spec, p) for p in planned},
                "seeds": [r["seed"] for _, r in results],
                "hardware": {str(r["seed"]): r.get("generated_on", "cpu") for _, r in results},  # older: all CPU
                "sampling": _sampling(results),
                "code": sorted({_commit(r) for _, r in results}),
                "runs": [str(path) for path, _ in results],
                "train_minutes": summarize([r["summary"].get("train_minutes") for _, r in results]),
                "ours": {m: summarize([r["metrics"].get(m) for _, r in results]) for m in spec.metrics},
                "paper": {m: row.paper.get(m) for m in spec.metrics},
            }
        )
    ordering = {
        m: ordering_agreement([r["ours"][m] for r in rows], [r["paper"][m] for r in rows]) for m in spec.metrics
    }
    return {
        "table": spec.name,
        "title": spec.title,
        "paper": spec.paper,
        "spec": table,
        "command": command,
        "base": spec.base,
        "common": spec.common,
        "metrics": spec.metrics,
        "labels": {m: METRICS[m][0] for m in spec.metrics},
        "scale": spec.scale,
        "notes": spec.notes,
        "evaluation": vars(spec.evaluation),
        "protocol": (first or {}).get("protocol"),
        "std": "sample std (ddof=1) over training seeds; each run samples with its own seed",
        "rows": rows,
        "reference": {m: summarize([ref.get(m) for ref in references.values()]) for m in spec.metrics},
        "reference_seeds": sorted(references),
        "paper_reference": spec.paper_reference,
        "ordering_vs_paper": ordering,
        "probe_curves": mean_probe_curves(spec, by_row),
        "training_curves": keep_earlier_curves(mean_training_curves(spec, by_row), _previous(out_dir, spec), rows),
        "written": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _sampling(results: list[tuple[Path, dict]]) -> list[str]:
    """How the row's runs sampled, e.g. ``["200 ddpm"]``: one entry per distinct sampler and step count."""
    found = {f"{r['protocol']['sampling_steps']} {r['protocol']['sampler']}" for _, r in results if r.get("protocol")}
    return sorted(found)


def _commit(result: dict) -> str:
    """The git commit that trained a run (its summary's provenance), or "unrecorded" for runs older than that."""
    return (result.get("summary", {}).get("code") or {}).get("git_commit") or "unrecorded"


def _mixed_sampling(agg: dict) -> bool:
    """True when the measured rows did not all sample alike (a row re-run after a sampler change, say)."""
    return len({tuple(row.get("sampling") or ()) for row in agg["rows"] if row.get("sampling")}) > 1


def _previous(out_dir: Path, spec: AblationSpec) -> dict:
    """The table's last aggregate (``OUT_DIR/TABLE.json``), ``{}`` when missing or unreadable."""
    return read_json(Path(out_dir, f"{spec.name}.json")) or {}


def _digits(value: float) -> int:
    return 1 if abs(value) >= 10 else 3 if abs(value) >= 0.1 else 4


def _cell(ours: dict, paper: float | None, scale: float, runs: int | None = None) -> str:
    """``mean ± std (paper)``; the std keeps the mean's decimals, ours is multiplied by ``scale``. When fewer than
    the row's ``runs`` report the figure (e.g. runs older than the metric), ``[n of runs]`` says how many did."""
    text = "—"
    if ours["mean"] is not None:
        mean, digits = ours["mean"] * scale, _digits(ours["mean"] * scale)
        text = f"{mean:.{digits}f}" + (f" ± {ours['std'] * scale:.{digits}f}" if ours["n"] > 1 else "")
        text += f" [{ours['n']} of {runs}]" if runs is not None and ours["n"] < runs else ""
    return text + (f" ({paper:g})" if paper is not None else "")  # the paper's number as the spec gives it


def markdown_table(agg: dict, json_path: str, figures: dict[str, str] | None = None) -> str:
    """The Markdown block: table (ours, paper's in parentheses), figures (``figures``: "rows" (the table as
    bars), "probes" (probe curves) and "training" (training dynamics), paths relative to the Markdown file),
    protocol, ordering agreement, commands."""
    metrics, scale = agg["metrics"], agg["scale"]
    lines = [
        f"### {agg['title']}",
        "",
        f"Paper: {agg['paper']}. Base preset `{agg['base']}`"
        + (f" with `{' '.join(agg['common'])}`" if agg["common"] else "")
        + f". Figures: `{json_path}`.",
        "",
        "| row | seeds | " + " | ".join(agg["labels"][m] for m in metrics) + " | notes |",
        "|---|---|" + "---|" * len(metrics) + "---|",
    ]
    for row in agg["rows"]:
        if not row["runnable"]:
            cells = ["not run"] * len(metrics)
            note = f"**not run:** {row['reason']}"
        else:
            cells = [_cell(row["ours"][m], row["paper"][m], scale.get(m, 1.0), len(row["seeds"])) for m in metrics]
            note = row["note"] or ""
            if row.get("same_as"):
                note = f"runs shared with `{row['same_as']}` (the same config)" + (f"; {note}" if note else "")
            if not row["seeds"]:
                note = "not run yet" + (f"; {note}" if note else "")
            elif _mixed_sampling(agg):  # rows that sampled differently must say so where they are read
                note = f"sampled: {', '.join(row['sampling'])} steps" + (f"; {note}" if note else "")
        lines.append(f"| {row['label']} | {_seeds_cell(row)} | " + " | ".join(cells) + f" | {note} |")
    ref = agg["reference"]
    if any(ref[m]["n"] for m in metrics) or agg["paper_reference"]:
        cells = [_cell(ref[m], agg["paper_reference"].get(m), scale.get(m, 1.0)) for m in metrics]
        seeds = ",".join(map(str, agg["reference_seeds"])) or "—"
        lines.append(f"| real held-out texts | {seeds} | " + " | ".join(cells) + " | same protocol as the samples |")
    captions = {
        "rows": "per row: mean ± std, seeds as dots, the paper's number as ◆",
        "probes": "probe curves, mean over seeds per row",
        "training": "training dynamics (losses, latent std, held-out accuracy), mean over seeds per row",
    }
    for kind, path in (figures or {}).items():
        lines += ["", f"![{agg['table']} {captions[kind]}]({path})"]
    lines += ["", *_protocol_lines(agg)]
    return "\n".join(lines)


def _seeds_cell(row: dict) -> str:
    """Training seeds grouped by where they trained, e.g. ``0 (cpu); 1,2 (NVIDIA H200)``; one group: seeds only."""
    groups: dict[str, list[str]] = {}
    for seed in row["seeds"]:
        groups.setdefault(row.get("hardware", {}).get(str(seed), "cpu"), []).append(str(seed))
    if len(groups) <= 1:
        return ",".join(map(str, row["seeds"])) or "—"
    return "; ".join(f"{','.join(seeds)} ({hardware})" for hardware, seeds in groups.items())


def _protocol_lines(agg: dict) -> list[str]:
    ev, p = agg["evaluation"], agg["protocol"]
    if _mixed_sampling(agg):
        sampling = "the sampler and steps of each row's notes (the rows did not all sample alike)"
    elif p:
        sampling = f"{p['sampling_steps']} {p['sampler']} sampling steps"
    else:
        sampling = f"{ev['steps']} sampling steps" if ev["steps"] else "the preset's sampler and steps"
    scaled = "; ours " + ", ".join(f"{m} ×{s:g}" for m, s in agg["scale"].items()) if agg["scale"] else ""
    orders = {m: o for m, o in agg["ordering_vs_paper"].items() if o["pairs"]}
    agreement = ", ".join(f"{agg['labels'][m]} {o['agree']}/{o['pairs']}" for m, o in orders.items())
    resolved = ", ".join(
        f"{agg['labels'][m]} {o['resolved_agree']}/{o['resolved_pairs']}"
        for m, o in orders.items()
        if o.get("resolved_pairs")
    )
    lines = [
        f"Cells: ours as mean ± std over training seeds (paper's number in parentheses{scaled}); each run is "
        "measured on its own sampling seed.",
        f"Judge and MAUVE features: `{ev['judge']}` (PPL token-level; MAUVE on its last-token final hidden state, "
        f"{ev['mauve_max_len']} tokens); {ev['num_samples']} samples per run against as many held-out texts; "
        f"{sampling}; probes on {ev['probe_texts']} held-out texts.",
    ]
    if agreement:
        lines.append(f"Pairs of rows ordered as in the paper: {agreement}.")
    if resolved:
        alpha = next(iter(orders.values())).get("alpha", 0.05)
        lines.append(
            f"Of the pairs whose seed figures differ at p < {alpha:g} (Welch's t-test over training seeds, "
            f"uncorrected for multiple pairs), ordered as in the paper: {resolved}. The other pairs are within seed "
            "noise."
        )
    if any(hw != "cpu" for row in agg["rows"] for hw in row.get("hardware", {}).values()):
        lines.append(
            "Runs on a GPU trained with `ldlm ablate --generate-only` (bf16 autocast, the presets' `auto`) and were "
            "scored on the CPU from their saved texts; CPU runs train in fp32. Seeds column: where each seed trained."
        )
    if agg["notes"]:
        lines.append(agg["notes"].strip())
    lines += [
        "",
        f"Reproduce: `HF_HUB_OFFLINE=1 {agg['command']}` (one row: add `--rows NAME`; the JSON lists each row's "
        "command and the `ldlm train` line of each run).",
    ]
    return lines


def write_markdown_block(path: Path, table: str, block: str) -> None:
    """Put ``block`` between the table's markers in ``path`` (replaced in place; appended the first time)."""
    start, end = f"<!-- ablate:{table}:start -->", f"<!-- ablate:{table}:end -->"
    wrapped = f"{start}\n{block}\n{end}"
    with directory_lock(path.parent):  # another table's job may be rewriting the same page
        text = path.read_text() if path.is_file() else "# Ablation results\n"
        if start in text and end in text and text.index(start) < text.index(end):
            text = text[: text.index(start)] + wrapped + text[text.index(end) + len(end) :]
        else:
            text = text.rstrip("\n") + "\n\n" + wrapped + "\n"
        atomic_write_text(path, text)
