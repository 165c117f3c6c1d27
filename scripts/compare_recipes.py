"""LDLM vs COSMOS at equal budget: merge `ldlm evaluate` JSONs (+ run summaries) into ``results/ldlm_vs_cosmos.json``.

Usage (issue 22: both recipes on the same ROCStories data, same wall-clock budget; docs/reproduction.md)::

    python scripts/compare_recipes.py \\
        --row cosmos=runs/cosmos_roc45k:results/roc45k_cosmos_report.json \\
        --row ldlm=runs/ldlm_roc45k:results/ldlm_roc45k_report.json \\
        --extra-minutes ldlm=17.9 --out results/ldlm_vs_cosmos.json

``--update`` adds rows to an existing file without its other rows' run directories.

Each row: held-out token accuracy (through z, clean input; and the token decoder on the true h where the run
measured it), judge PPL / entropy / MAUVE / Div as mean +- std over the evaluation's seeds, train minutes from
the run's ``summary.json`` plus ``--extra-minutes`` (work done outside the run, e.g. features encoded beforehand),
and the optimiser steps of every stage. ``judge_ppl`` and ``judge_ppl_untrained`` stay top-level keys per model
(earlier checks read them); the untrained figure comes from an `ldlm report` JSON when one is given
(``--row NAME=RUN:EVAL:REPORT``), else it is null.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ldlm.reporting.figures import save_figure
from ldlm.storage.io import atomic_write_json

STAGES = {
    "cosmos": [("autoencoder", "head_pretrain_steps"), ("autoencoder_train", "steps"), ("diffusion_train", "steps")],
    "ldlm": [("joint_train", "steps"), ("decoder_train", "steps")],
}
METRICS = ("judge_ppl", "entropy", "mauve", "div")


def training_steps(cfg: dict) -> int:
    """Sum of the optimiser steps of every stage the run's recipe trains (from its resolved config)."""
    recipe = cfg.get("recipe", "cosmos")
    return sum(int(cfg.get(section, {}).get(key, 0) or 0) for section, key in STAGES.get(recipe, []))


def steps_done(run_dir: Path) -> dict[str, int]:
    """Optimiser steps each stage actually took (the last ``step`` its metrics.jsonl logged): below the configured
    ``steps`` where a stage stopped at its ``max_minutes``."""
    done = {}
    for metrics in sorted(run_dir.glob("*/metrics.jsonl")):
        steps = [json.loads(line).get("step", 0) for line in metrics.read_text().splitlines() if line.strip()]
        if steps:
            done[metrics.parent.name] = int(max(steps))
    return done


def row(run_dir: Path, evaluation: Path, report: Path | None = None, extra_minutes: float = 0.0) -> dict:
    """The comparison figures of one trained run from its summary, config and `ldlm evaluate` JSON."""
    cfg = json.loads((run_dir / "config.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    ev = json.loads(evaluation.read_text())
    model = ev["model"]
    out = {
        "recipe": cfg.get("recipe", "cosmos"),
        "encoder": cfg["encoder"]["name"],
        "judge": ev["protocol"]["judge"],
        "judge_ppl": model["judge_ppl"]["mean"],
        "judge_ppl_untrained": None,
        **{f"{k}_stats": model[k] for k in METRICS},
        "heldout_token_accuracy": summary.get("heldout_token_accuracy"),
        "heldout_head_accuracy_true_h": summary.get("heldout_head_accuracy_true_h"),
        "train_texts": summary.get("train_texts"),
        "steps": training_steps(cfg),  # as configured
        "steps_done": steps_done(run_dir),
        "run_minutes": summary["train_minutes"],
        "extra_minutes": extra_minutes,
        "train_minutes": summary["train_minutes"] + extra_minutes,
        "evaluation": str(evaluation),
        "collapse": ev.get("collapse"),
        # Each row's own held-out reference: texts round-tripped through *its* tokenizer (MiniLM lowercases, SmolLM2
        # keeps case), so judge PPL is comparable across rows only as a ratio to the row's reference.
        "reference": ev["reference"],
        "judge_ppl_ratio": model["judge_ppl"]["mean"] / ev["reference"]["judge_ppl"]["mean"],
    }
    if report is not None:
        rep = json.loads(report.read_text())
        out["judge_ppl_untrained"] = rep["judge_ppl_untrained"]
        out["report"] = str(report)
    return out


def plot_tradeoff(result: dict, out: Path) -> Path:
    """Held-out token accuracy (through z) against MAUVE (mean +- std over seeds), one labelled point per row: where
    each recipe and setting sits between reconstruction and generation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    rows = [(n, r) for n, r in result.items() if isinstance(r, dict) and "mauve_stats" in r]
    rows = sorted((r["heldout_token_accuracy"], n, r) for n, r in rows if r.get("heldout_token_accuracy") is not None)
    for i, (acc, name, r) in enumerate(rows):
        mauve = r["mauve_stats"]
        color = "tab:blue" if r.get("recipe") == "cosmos" else "tab:red"
        ax.errorbar(acc, mauve["mean"], yerr=mauve["std"], fmt="o", color=color, capsize=3)
        # neighbours along x alternate above / below their point, so close labels do not overprint
        ax.annotate(name, (acc, mauve["mean"]), textcoords="offset points", xytext=(5, 5 if i % 2 else -11), fontsize=8)
    ax.set_xlabel("held-out token accuracy through z (clean input)")
    ax.set_ylabel("MAUVE (mean ± std over seeds)")
    ax.set_title("Reconstruction against generation (blue: COSMOS, red: LDLM)")
    ax.grid(alpha=0.3)
    return save_figure(fig, out)


def parse_row(spec: str) -> tuple[str, Path, Path, Path | None]:
    name, _, paths = spec.partition("=")
    parts = paths.split(":")
    if not name or len(parts) not in (2, 3):
        raise SystemExit(f"--row {spec!r}: expected NAME=RUN_DIR:EVALUATE_JSON[:REPORT_JSON]")
    return name, Path(parts[0]), Path(parts[1]), Path(parts[2]) if len(parts) == 3 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--row", action="append", required=True, help="NAME=RUN_DIR:EVALUATE_JSON[:REPORT_JSON]")
    parser.add_argument("--extra-minutes", action="append", default=[], help="NAME=MINUTES spent outside the run")
    parser.add_argument("--command", action="append", default=[], help="a command behind the rows (recorded)")
    parser.add_argument("--out", type=Path, default=Path("results/ldlm_vs_cosmos.json"))
    parser.add_argument(
        "--update",
        action="store_true",
        help="keep the rows and commands already in --out (their run directories need not exist any more) and add "
        "or replace only the --row ones",
    )
    parser.add_argument("--plot", type=Path, default=None, help="also write the accuracy-vs-MAUVE figure (PNG)")
    args = parser.parse_args()
    extra = {k: float(v) for k, _, v in (s.partition("=") for s in args.extra_minutes)}
    result: dict = {}
    if args.update and args.out.exists():
        try:
            result = json.loads(args.out.read_text())
        except json.JSONDecodeError as e:
            raise SystemExit(f"--update: {args.out} is not valid JSON ({e}); fix or remove it, or drop --update") from e
    earlier_commands = result.pop("commands", [])
    result.pop("budget_spread", None)
    for spec in args.row:
        name, run_dir, evaluation, report = parse_row(spec)
        result[name] = row(run_dir, evaluation, report, extra.get(name, 0.0))
        result.setdefault("reference", result[name]["reference"])  # the first row's (earlier checks read it)
    minutes = [r["train_minutes"] for k, r in result.items() if k != "reference"]
    result["budget_spread"] = max(minutes) / min(minutes) - 1  # the issue asks for equal minutes within 10%
    result["commands"] = earlier_commands + [c for c in args.command if c not in earlier_commands]
    atomic_write_json(args.out, result)
    for name, r in result.items():
        if name in ("reference", "budget_spread", "commands"):
            continue
        s = {k: r[f"{k}_stats"] for k in METRICS}
        ppl = s["judge_ppl"]
        print(
            f"{name:8s} acc {r['heldout_token_accuracy']:.3f}  PPL {ppl['mean']:7.1f}+-{ppl['std']:.1f}"
            f" ({r['judge_ppl_ratio']:.1f}x ref)"
            f"  entropy {s['entropy']['mean']:.2f}  MAUVE {s['mauve']['mean']:.3f}+-{s['mauve']['std']:.3f}"
            f"  Div {s['div']['mean']:.2f}  {r['train_minutes']:.1f} min"
        )
    print(f"wrote {args.out} (minutes spread {result['budget_spread']:.1%})")
    if args.plot is not None:
        print(f"wrote {plot_tradeoff(result, args.plot)}")


if __name__ == "__main__":
    main()
