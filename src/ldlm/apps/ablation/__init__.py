"""Paper ablation tables at small scale (``ldlm ablate TABLE``): spec files in ``configs/ablations/``, one
training + measurement per row x seed (resumable), mean ± std per row in ``OUT_DIR/TABLE.json`` and a Markdown
table beside the paper's numbers in ``docs/results.md``."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ldlm.apps.ablation.curves import plot_probe_curves, plot_row_figures
from ldlm.apps.ablation.run import (
    PlannedRun,
    generate_one,
    generated_path,
    plan_runs,
    read_result,
    run_key,
    run_one,
    shared_result,
    suite_config,
    train_command,
)
from ldlm.apps.ablation.spec import METRICS, AblationSpec, AblationSpecError, load_spec
from ldlm.apps.ablation.table import aggregate, markdown_table, write_markdown_block
from ldlm.apps.ablation.training import plot_training_curves
from ldlm.storage.io import atomic_write_json, directory_lock

__all__ = ["AblationSpec", "AblationSpecError", "ablate", "load_spec"]

DEFAULTS = {"out_dir": "results/ablations", "runs_dir": "runs/ablations", "markdown": "docs/results.md"}


def _select_rows(spec: AblationSpec, names: list[str] | None):
    if not names:
        return spec.rows
    known = [r.name for r in spec.rows]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise AblationSpecError(f"--rows: {', '.join(unknown)} not in {spec.name} (rows: {', '.join(known)})")
    return [r for r in spec.rows if r.name in names]


def _command(table: str, seeds: list[int], dirs: dict) -> str:
    """The ``ldlm ablate`` line of the whole table (non-default directories included)."""
    extra = [f"--{k.replace('_', '-')} {v}" for k, v in dirs.items() if str(v) != DEFAULTS[k]]
    return " ".join(["ldlm ablate", str(table), f"--seeds {','.join(map(str, seeds))}", *extra])


def _print_plan(spec: AblationSpec, planned: list[PlannedRun], rows, echo) -> None:
    done = [p for p in planned if read_result(p.result, run_key(spec, p.row)) is not None]
    echo(f"{spec.name}: {len(planned)} runs planned, {len(done)} already measured")
    for p in planned:
        state = "done" if p in done else "to run"
        if p.shared and p not in done:
            there = read_result(p.shared.result, p.shared.key) is not None
            state = f"{'measured' if there else 'to run'} as {p.shared.table}'s run {p.shared.result}"
        echo(f"{p.row.name} seed {p.seed}: {state} -> {p.result}")
        echo(f"  {train_command(spec, p)}")
    for row in rows:
        if not row.runnable:
            echo(f"{row.name}: not run: {row.reason}")


def ablate(
    table: str,
    *,
    seeds: list[int] | None = None,
    rows: list[str] | None = None,
    out_dir: str | Path = DEFAULTS["out_dir"],
    runs_dir: str | Path = DEFAULTS["runs_dir"],
    markdown: str | Path = DEFAULTS["markdown"],
    dry_run: bool = False,
    report_only: bool = False,
    generate_only: bool = False,
    progress: bool = False,
    echo=print,
) -> dict | None:
    """Run (or with ``dry_run`` only print) the table's runs, then write TABLE.json and the Markdown block.
    ``report_only``: rebuild the JSON and Markdown from the per-run JSONs already written, training nothing.
    ``generate_only``: train, sample and run the judge-free probes of every unmeasured run into
    ``OUT_DIR/TABLE/generated/`` (no judge is loaded, no table written); a later call scores those files."""
    spec = load_spec(table)
    seeds = seeds or spec.seeds
    selected = _select_rows(spec, rows)
    planned = plan_runs(spec, seeds=seeds, rows=selected, runs_dir=Path(runs_dir), out_dir=Path(out_dir))
    dirs = {"out_dir": out_dir, "runs_dir": runs_dir, "markdown": markdown}
    table_seeds = sorted({*spec.seeds, *seeds})  # the table's line: a call for one seed must not shrink it
    command = _command(table, table_seeds, dirs)
    if dry_run:
        _print_plan(spec, planned, selected, echo)
        return None
    if generate_only:
        _generate_all(spec, planned, progress=progress, echo=echo)
        return None
    if not report_only:
        _run_all(spec, planned, command=lambda run: _command(table, [run.seed], dirs), progress=progress, echo=echo)
    with directory_lock(out_dir):  # a concurrent job of the same table must not write an older aggregate last
        agg = aggregate(
            spec, table=str(table), out_dir=Path(out_dir), runs_dir=Path(runs_dir), seeds=table_seeds, command=command
        )
        json_path = Path(out_dir) / f"{spec.name}.json"
        atomic_write_json(json_path, agg)
    pngs = {
        "rows": plot_row_figures(agg, Path(out_dir) / f"{spec.name}_rows.png"),
        "probes": plot_probe_curves(agg["probe_curves"], Path(out_dir) / f"{spec.name}_probes.png", spec.title),
        "training": plot_training_curves(
            agg["training_curves"], Path(out_dir) / f"{spec.name}_training.png", spec.title
        ),
    }
    where = Path(markdown).resolve().parent
    figures = {kind: os.path.relpath(png, where) for kind, png in pngs.items() if png}
    write_markdown_block(Path(markdown), spec.name, markdown_table(agg, str(json_path), figures))
    written = "".join(f", {png}" for png in pngs.values() if png)
    echo(f"wrote {json_path}{written} and the {spec.name} table in {markdown}")
    return agg


def _run_all(spec: AblationSpec, planned: list[PlannedRun], *, command, progress: bool, echo) -> None:
    """Every planned run without a matching JSON, one progress line each; the judge is loaded once.
    ``command(run)``: the ``ldlm ablate`` line of that run's seed (its row is added here)."""
    from ldlm.evaluation.suite import scoring_judge

    judge = None
    needs_judge = any(METRICS[m][1] in ("suite", "interpolation") for m in spec.metrics)
    for i, run in enumerate(planned, 1):
        where = f"[{i}/{len(planned)}] {spec.name} {run.row.name} seed {run.seed}"
        if read_result(run.result, run_key(spec, run.row)) is not None:
            echo(f"{where}: measured earlier ({run.result})")
            continue
        row_command = f"{command(run)} --rows {run.row.name}"
        if shared_result(spec, run, ablate_command=row_command) is not None:
            echo(f"{where}: taken from {run.shared.table}'s measured run ({run.shared.result}) -> {run.result}")
            continue
        if judge is None and needs_judge:
            judge = scoring_judge(suite_config(spec, run.seed))
        start = time.perf_counter()
        result = run_one(spec, run, judge=judge, ablate_command=row_command, progress=progress)
        minutes = (time.perf_counter() - start) / 60
        if result["generated_now"]:
            trained = "trained" if result["trained_now"] else "loaded"
            how = f"{trained} {result['train_minutes_this_call']:.1f}, measured {result['eval_minutes']:.1f}"
        else:
            how = f"scored the texts generated earlier on {result['generated_on']}"
        echo(f"{where}: {minutes:.1f} min ({how}) -> {run.result}")


def _generate_all(spec: AblationSpec, planned: list[PlannedRun], *, progress: bool, echo) -> None:
    """:func:`generate_one` for every planned run that has neither a measured nor a generated JSON."""
    for i, run in enumerate(planned, 1):
        where = f"[{i}/{len(planned)}] {spec.name} {run.row.name} seed {run.seed}"
        if read_result(run.result, run_key(spec, run.row)) is not None:
            echo(f"{where}: measured earlier ({run.result})")
            continue
        if run.shared and read_result(run.shared.result, run.shared.key) is not None:
            echo(f"{where}: {run.shared.table} measured this run ({run.shared.result}); a plain call takes it")
            continue
        start = time.perf_counter()
        generated = generate_one(spec, run, progress=progress)
        if not generated["generated_now"]:
            echo(f"{where}: generated earlier ({generated_path(run)})")
            continue
        minutes, trained = (time.perf_counter() - start) / 60, generated["train_minutes_this_call"]
        echo(
            f"{where}: {minutes:.1f} min (trained {trained:.1f}, generated {generated['generate_minutes']:.1f} "
            f"on {generated['generated_on']}) -> {generated_path(run)}"
        )
