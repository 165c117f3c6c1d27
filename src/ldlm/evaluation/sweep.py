"""Quality-speed sweep: judge PPL, entropy and MAUVE against the number of sampling steps (Pareto plots).

Same texts, judge and MAUVE reference as the suite (:mod:`ldlm.evaluation.suite`); only ``steps`` varies, and with
``samplers`` (``ldlm sweep --samplers euler,ddim,dpmpp_2m``) the sampler too: one row per (sampler, steps), one line
per sampler. Every sampler makes exactly one denoiser call per step, so ``steps`` is the number of model calls.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

from ldlm.evaluation.suite import SuiteConfig, TextScorer, model_info, protocol, summarize
from ldlm.reporting.figures import plot_curves
from ldlm.storage.io import atomic_write_json

__all__ = ["SWEEP_METRICS", "steps_sweep", "write_sweep"]

SWEEP_METRICS = ("judge_ppl", "entropy", "mauve", "div")


def steps_sweep(
    model, scorer: TextScorer, steps_list: Sequence[int], cfg: SuiteConfig, samplers: Sequence[str] | None = None
) -> dict:
    """For each step count: ``cfg.num_samples`` samples per seed, scored; mean ± std and seconds per sample.

    ``samplers``: sweep each of these samplers (rows then carry ``sampler``; ``cfg.sampler`` is ignored); None: the
    single sampler ``cfg.sampler`` (or the run's), rows without a ``sampler`` key.
    """
    steps_list = sorted(set(steps_list))
    if not steps_list or steps_list[0] < 1:
        raise ValueError(f"sweep steps must be a non-empty list of integers >= 1, got {list(steps_list)}")
    if samplers is not None and (not samplers or len(set(samplers)) != len(samplers)):
        raise ValueError(f"sweep samplers must be a non-empty list without repeats, got {list(samplers)}")
    rows, warnings = [], []
    for sampler in samplers or (None,):
        run_cfg = cfg if sampler is None else dataclasses.replace(cfg, sampler=sampler)  # validates the name
        for steps in steps_list:
            row, notes = _sweep_row(model, scorer, steps, run_cfg)
            rows.append(row if sampler is None else {"sampler": sampler, **row})
            prefix = "" if sampler is None else f"{sampler}, "
            warnings += [prefix + n for n in notes]
    proto = protocol(cfg, model_info(model), scorer)
    proto["sampling_steps"] = steps_list
    sc = model.cfg.sample  # the grid options (older configs and stand-ins may lack them: the defaults)
    proto["time_grid"] = getattr(sc, "time_grid", "auto")
    proto["lower_order_final"] = getattr(sc, "lower_order_final", False)
    if samplers is not None:
        del proto["sampler"]
        proto["samplers"] = list(samplers)
    return {
        "run": str(model.cfg.run_dir),
        "config": model.cfg.name,
        "protocol": proto,
        "rows": rows,
        "warnings": warnings,
    }


def _sweep_row(model, scorer: TextScorer, steps: int, cfg: SuiteConfig) -> tuple[dict, list[str]]:
    """One step count with ``cfg.sampler``: the row (mean ± std per metric, seconds per sample) and its warnings."""
    scores, seconds, warnings = [], 0.0, []
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
    return row, warnings


def write_sweep(result: dict, out: str | Path) -> dict[str, Path]:
    """JSON table at ``out`` and one PNG beside it: each metric (mean over seeds) against steps (= model calls), log
    x; one line per sampler when the rows carry ``sampler``."""
    out = Path(out)
    rows = result["rows"]
    labels = list(dict.fromkeys(r.get("sampler", "model") for r in rows))

    def series(value) -> dict:
        return {
            label: (
                [r["steps"] for r in rows if r.get("sampler", "model") == label],
                [value(r) for r in rows if r.get("sampler", "model") == label],
            )
            for label in labels
        }

    panels = [
        ("judge PPL (token-level)", "PPL", series(lambda r: r["judge_ppl"]["mean"])),
        ("unigram entropy", "nats", series(lambda r: r["entropy"]["mean"])),
        ("MAUVE", "MAUVE", series(lambda r: r["mauve"]["mean"])),
        ("generation time", "s / sample", series(lambda r: r["seconds_per_sample"])),
    ]
    proto = result["protocol"]
    which = proto["sampler"] if "sampler" in proto else ", ".join(proto["samplers"])
    png = plot_curves(
        out.with_suffix(".png"),
        panels,
        xlabel="sampling steps (= denoiser calls)",
        title=f"{result['config']}: quality vs sampling steps ({which})",
        logx=True,
        log_panels=("judge PPL (token-level)",),
    )
    atomic_write_json(out, result)
    return {"json": out, "png": png}
