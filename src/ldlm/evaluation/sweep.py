"""Quality-speed sweep: judge PPL, entropy and MAUVE against the number of sampling steps (Pareto plots).

Same texts, judge and MAUVE reference as the suite (:mod:`ldlm.evaluation.suite`); only ``steps`` varies.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from ldlm.evaluation.figures import plot_curves
from ldlm.evaluation.suite import SuiteConfig, TextScorer, model_info, protocol, summarize
from ldlm.io import atomic_write_json

__all__ = ["SWEEP_METRICS", "steps_sweep", "write_sweep"]

SWEEP_METRICS = ("judge_ppl", "entropy", "mauve", "div")


def steps_sweep(model, scorer: TextScorer, steps_list: Sequence[int], cfg: SuiteConfig) -> dict:
    """For each step count: ``cfg.num_samples`` samples per seed, scored; mean ± std and seconds per sample."""
    steps_list = sorted(set(steps_list))
    if not steps_list or steps_list[0] < 1:
        raise ValueError(f"sweep steps must be a non-empty list of integers >= 1, got {list(steps_list)}")
    rows, warnings = [], []
    for steps in steps_list:
        scores, seconds = [], 0.0
        for seed in cfg.seeds:
            t0 = time.perf_counter()
            samples = model.generate(
                cfg.num_samples, steps=steps, sampler=cfg.sampler, seed=seed, batch_size=cfg.gen_batch_size
            )
            seconds += time.perf_counter() - t0
            values, notes = scorer.score(samples)
            scores.append(values)
            warnings += [f"steps {steps}, seed {seed}: {n}" for n in notes]
        row = {"steps": steps, "seconds_per_sample": seconds / (len(cfg.seeds) * cfg.num_samples)}
        row.update({m: summarize([s[m] for s in scores]) for m in SWEEP_METRICS})
        rows.append(row)
    proto = protocol(cfg, model_info(model), scorer)
    proto["sampling_steps"] = steps_list
    return {
        "run": str(model.cfg.run_dir),
        "config": model.cfg.name,
        "protocol": proto,
        "rows": rows,
        "warnings": warnings,
    }


def write_sweep(result: dict, out: str | Path) -> dict[str, Path]:
    """JSON table at ``out`` and one PNG beside it: each metric (mean over seeds) against steps, log x."""
    out = Path(out)
    steps = [r["steps"] for r in result["rows"]]

    def series(metric: str) -> dict:
        return {"model": (steps, [r[metric]["mean"] for r in result["rows"]])}

    panels = [
        ("judge PPL (token-level)", "PPL", series("judge_ppl")),
        ("unigram entropy", "nats", series("entropy")),
        ("MAUVE", "MAUVE", series("mauve")),
        ("generation time", "s / sample", {"model": (steps, [r["seconds_per_sample"] for r in result["rows"]])}),
    ]
    png = plot_curves(
        out.with_suffix(".png"),
        panels,
        xlabel="sampling steps",
        title=f"{result['config']}: quality vs sampling steps ({result['protocol']['sampler']})",
        logx=True,
        log_panels=("judge PPL (token-level)",),
    )
    atomic_write_json(out, result)
    return {"json": out, "png": png}
