"""Few-step sampling across models: merge `ldlm sweep` JSONs into ``results/fewstep.json`` + ``results/fewstep.png``.

Usage::

    python scripts/fewstep.py --model quickstart=results/quickstart_steps_sweep.json \\
        --model cosmos_roc45k=results/roc45k_sampler_sweep.json [--out results/fewstep.json]

JSON: ``{"models": {name: {run, protocol, rows}}, "recommended": {name: choice}}``. The PNG has one row of panels
per model (judge PPL, MAUVE, entropy against model calls, log x), a line per sampler with +- one seed-std error
bars, and a dashed band for Euler at 200 calls +- one std.

The recommendation of a model is the fewest-call (sampler, steps) row whose judge PPL and MAUVE are each within one
seed-std of Euler at 200 calls: PPL at most ``euler + std``, MAUVE at least ``euler - std`` (being better than the
target does not disqualify), with ``std`` the larger of the two rows' stds; ties in calls go to the lower PPL.
Euler at 200 qualifies itself, so there is always a choice. With one seed the stds are 0 and only rows at least as
good as Euler's qualify; ``warnings`` says so.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ldlm.reporting.figures import _pyplot, save_figure
from ldlm.storage.io import atomic_write_json

TARGET = ("euler", 200)
PANELS = (("judge_ppl", "judge PPL", True), ("mauve", "MAUVE", False), ("entropy", "unigram entropy (nats)", False))


def _sampler(row: dict, sweep: dict) -> str:
    """Rows of a single-sampler sweep carry no ``sampler``: it is the protocol's."""
    return row.get("sampler") or sweep.get("protocol", {}).get("sampler", "model")


def _std(metric: dict) -> float:
    return float(metric.get("std") or 0.0)


def recommend(sweep: dict) -> dict:
    """The fewest-call (sampler, steps) within one seed-std of Euler at 200 calls on judge PPL and MAUVE (module
    docstring); ``None`` fields and a ``reason`` when the sweep has no Euler-200 row."""
    rows = [{**r, "sampler": _sampler(r, sweep)} for r in sweep["rows"]]
    target = next((r for r in rows if (r["sampler"], r["steps"]) == TARGET), None)
    if target is None:
        return {"sampler": None, "steps": None, "reason": "no euler row at 200 steps to compare with"}
    ok = []
    for r in rows:
        ppl_tol = max(_std(r["judge_ppl"]), _std(target["judge_ppl"]))
        mauve_tol = max(_std(r["mauve"]), _std(target["mauve"]))
        if None in (r["judge_ppl"]["mean"], r["mauve"]["mean"]):
            continue
        if (
            r["judge_ppl"]["mean"] <= target["judge_ppl"]["mean"] + ppl_tol
            and r["mauve"]["mean"] >= target["mauve"]["mean"] - mauve_tol
        ):
            ok.append(r)
    best = min(ok, key=lambda r: (r["steps"], r["judge_ppl"]["mean"]))  # the target row itself is always in ok
    return {
        "sampler": best["sampler"],
        "steps": best["steps"],
        "judge_ppl": best["judge_ppl"]["mean"],
        "mauve": best["mauve"]["mean"],
        "euler_200": {"judge_ppl": target["judge_ppl"]["mean"], "mauve": target["mauve"]["mean"]},
        "speedup": TARGET[1] / best["steps"],
    }


def merge(sweeps: dict[str, dict]) -> dict:
    """``{name: sweep JSON}`` -> the fewstep table (module docstring)."""
    models, recommended, warnings = {}, {}, []
    for name, sweep in sweeps.items():
        models[name] = {k: sweep[k] for k in ("run", "protocol", "rows", "commands") if k in sweep}
        recommended[name] = recommend(sweep)
        seeds = sweep.get("protocol", {}).get("seeds", [])
        if len(seeds) < 2:
            warnings.append(
                f"{name}: {len(seeds)} seed(s), stds are 0: only rows at least as good as euler 200 qualify"
            )
    return {
        "models": models,
        "recommended": recommended,
        "rule": "fewest calls with judge PPL <= euler200 + std and MAUVE >= euler200 - std (std: larger of the rows')",
        "warnings": warnings,
    }


def plot(result: dict, out: str | Path) -> Path:
    """One row of panels per model (module docstring); written atomically."""
    plt = _pyplot()
    names = list(result["models"])
    fig, axes = plt.subplots(len(names), len(PANELS), figsize=(4.5 * len(PANELS), 3.6 * len(names)), squeeze=False)
    for axrow, name in zip(axes, names, strict=True):
        sweep = result["models"][name]
        rows = [{**r, "sampler": _sampler(r, sweep)} for r in sweep["rows"]]
        target = next((r for r in rows if (r["sampler"], r["steps"]) == TARGET), None)
        for ax, (key, label, logy) in zip(axrow, PANELS, strict=True):
            for sampler in dict.fromkeys(r["sampler"] for r in rows):
                pts = sorted((r["steps"], r[key]["mean"], _std(r[key])) for r in rows if r["sampler"] == sampler)
                pts = [p for p in pts if p[1] is not None]
                if pts:
                    xs, ys, es = zip(*pts, strict=True)
                    ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=sampler)
            if target is not None and target[key]["mean"] is not None:
                mean, std = target[key]["mean"], _std(target[key])
                ax.axhline(mean, color="gray", linestyle="--", linewidth=1, label="euler 200")
                if std > 0:
                    ax.axhspan(mean - std, mean + std, color="gray", alpha=0.15)
            ax.set(title=f"{name}: {label}", xlabel="model calls", ylabel=label, xscale="log")
            if logy:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    return save_figure(fig, out)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", required=True, metavar="NAME=SWEEP.json", help="repeatable")
    ap.add_argument("--out", default="results/fewstep.json")
    args = ap.parse_args(argv)
    sweeps = {}
    for spec in args.model:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            ap.error(f"--model {spec!r}: use NAME=PATH.json")
        if name in sweeps:
            ap.error(f"--model {name!r} is given twice")
        sweeps[name] = json.loads(Path(path).read_text())
    out = Path(args.out)
    if out.suffix != ".json":
        ap.error(f"--out {args.out!r} must end in .json (the PNG is written beside it)")
    result = merge(sweeps)
    plot(result, out.with_suffix(".png"))
    atomic_write_json(out, result)
    for name, rec in result["recommended"].items():
        print(f"{name}: {rec}")
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return result


if __name__ == "__main__":
    main()
