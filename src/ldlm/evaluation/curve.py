"""Quality against training time: judge PPL, entropy, MAUVE and Div of a run's kept checkpoints (EMA weights).

The run's last stage (the one trained last: diffusion for COSMOS, ``ar`` for the AR baseline) keeps checkpoints
every ``save_every`` steps; each is put into the saved model in turn and scored by the suite's scorer (same judge,
MAUVE reference and texts as ``ldlm evaluate``). Minutes are the run's training minutes when the checkpoint was
written: the time spent before the stage plus the stage's ``elapsed_s`` at that step (its ``metrics.jsonl``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from ldlm.evaluation.suite import SuiteConfig, TextScorer, collapse_check, model_info, protocol, summarize
from ldlm.evaluation.sweep import SWEEP_METRICS
from ldlm.reporting.figures import plot_curves
from ldlm.storage.io import atomic_write_json
from ldlm.training.checkpoint import list_checkpoints, load_ema_weights

__all__ = ["CurvePoint", "curve_points", "learning_curve", "power_law_trend", "write_curve"]

CurvePoint = tuple[int, float, Path | None]  # (step, training minutes, checkpoint dir or None for the final model)


def _last_stage(run_dir: Path) -> Path:
    stages = [p.parent for p in run_dir.glob("*/metrics.jsonl") if (p.parent / "checkpoints").is_dir()]
    if not stages:
        raise FileNotFoundError(f"{run_dir} has no stage with checkpoints (set the stage's save_every > 0)")
    return max(stages, key=lambda p: (p / "metrics.jsonl").stat().st_mtime)


def curve_points(run_dir: str | Path, minutes: Sequence[float] | None = None) -> list[CurvePoint]:
    """The checkpoints of the run's last stage with their training minutes, plus the final model; with ``minutes``
    only the checkpoint nearest to each requested time (and the final model)."""
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    stage = _last_stage(run_dir)
    elapsed = {}
    for line in (stage / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "elapsed_s" in row:
            elapsed[row["step"]] = row["elapsed_s"]  # a resumed run logs a step again: the last line wins
    total, last_step = float(summary["train_minutes"]), max(elapsed)
    offset = total - elapsed[last_step] / 60  # everything before the stage's first step (features, stages, ...)
    points: list[CurvePoint] = []
    for path in sorted(list_checkpoints(stage / "checkpoints")):
        step = int(path.name.removeprefix("step_"))
        if step in elapsed:
            points.append((step, offset + elapsed[step] / 60, path))
    if minutes is not None and points:
        chosen = {min(points, key=lambda p: abs(p[1] - m)) for m in minutes if m < total}
        points = sorted(chosen)
    return [*points, (last_step, total, None)]


def learning_curve(
    load_model, run_dir: str | Path, points: Sequence[CurvePoint], scorer: TextScorer, cfg: SuiteConfig
) -> dict:
    """Score ``cfg.num_samples`` samples per seed at every point; ``load_model()`` returns a fresh saved model."""
    rows, warnings, model = [], [], None
    for step, minutes, ckpt in points:
        model = load_model()
        if ckpt is not None:
            load_ema_weights(model, ckpt)
        scores = []
        for seed in cfg.seeds:
            samples = model.generate(
                cfg.num_samples, steps=cfg.steps, sampler=cfg.sampler, seed=seed, batch_size=cfg.gen_batch_size
            )
            values, notes = scorer.score(samples)
            scores.append(values)
            warnings += [f"step {step}, seed {seed}: {n}" for n in notes]
        row = {"step": step, "minutes": round(minutes, 2), "checkpoint": str(ckpt) if ckpt else "final model"}
        row.update({m: summarize([s[m] for s in scores]) for m in SWEEP_METRICS})
        row["first_sample"] = samples[0]
        rows.append(row)
    return {
        "run": str(run_dir),
        "config": model.cfg.name,
        "protocol": protocol(cfg, model_info(model), scorer),
        "rows": rows,
        "warnings": warnings,
    }


def with_collapse_flags(curve: dict, reference: dict) -> dict:
    """Each row gets the suite's collapse verdict against the real-text ``reference`` row (mean/std per metric)."""
    for row in curve["rows"]:
        row["collapse"] = collapse_check(row, reference)
    return curve


def power_law_trend(rows: Sequence[dict], metric: str, *, target: float, last: int = 3) -> dict:
    """Least-squares fit of log(metric) = a + b log(minutes) through the curve's last ``last`` points, and the
    minutes at which that trend reaches ``target`` (None when the metric is not moving toward it). A rough
    budget estimate for "how long until", not a prediction: such curves usually flatten."""
    pts = [(r["minutes"], r[metric]["mean"]) for r in rows if r["minutes"] > 0 and (r[metric]["mean"] or 0) > 0]
    pts = pts[-last:]
    out = {"metric": metric, "target": target, "fit": f"log-log least squares, last {len(pts)} points"}
    if len(pts) < 2:
        return {**out, "exponent": None, "minutes_to_target": None}
    xs, ys = [math.log(m) for m, _ in pts], [math.log(v) for _, v in pts]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    now_m, now_v = pts[-1]
    gap = math.log(target) - math.log(now_v)
    reaches = slope != 0 and gap / slope >= 0
    minutes = math.exp(math.log(now_m) + gap / slope) if reaches else None
    return {**out, "exponent": slope, "minutes_now": now_m, "value_now": now_v, "minutes_to_target": minutes}


def with_trends(curves: dict[str, dict], reference: dict | None, *, ppl_factor: float = 2.0) -> dict[str, dict]:
    """Each curve gets ``trend``: its judge-PPL power-law trend toward ``ppl_factor`` x the reference's PPL."""
    if reference is not None and reference["judge_ppl"]["mean"]:
        target = ppl_factor * reference["judge_ppl"]["mean"]
        for curve in curves.values():
            curve["trend"] = {"judge_ppl": power_law_trend(curve["rows"], "judge_ppl", target=target)}
    return curves


def write_curve(curves: dict[str, dict], out: str | Path, reference: dict | None = None) -> dict[str, Path]:
    """JSON ``{label: curve}`` at ``out`` and a PNG beside it: each metric against training minutes, one line per
    run, the real texts' mean as a flat line when ``reference`` (a suite row) is given."""
    out = Path(out)
    curves = with_trends(curves, reference)

    def series(metric: str) -> dict:
        lines = {
            label: ([r["minutes"] for r in c["rows"]], [r[metric]["mean"] for r in c["rows"]])
            for label, c in curves.items()
        }
        if reference is not None and reference[metric]["mean"] is not None:
            xs = [r["minutes"] for c in curves.values() for r in c["rows"]]
            lines["real held-out texts"] = ([min(xs), max(xs)], [reference[metric]["mean"]] * 2)
        return lines

    panels = [
        ("judge PPL (token-level)", "PPL", series("judge_ppl")),
        ("unigram entropy", "nats", series("entropy")),
        ("MAUVE", "MAUVE", series("mauve")),
        ("Div", "Div", series("div")),
    ]
    png = plot_curves(
        out.with_suffix(".png"),
        panels,
        xlabel="training minutes",
        title="quality vs training time",
        log_panels=("judge PPL (token-level)",),
    )
    atomic_write_json(out, {"curves": curves, "reference": reference})
    return {"json": out, "png": png}
