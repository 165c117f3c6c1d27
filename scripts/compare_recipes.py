"""LDLM vs COSMOS at equal budget: merge two `ldlm report` JSONs into ``results/ldlm_vs_cosmos.json``.

Usage (after training both CPU quickstarts on the same data and step budget)::

    HF_HUB_OFFLINE=1 ldlm quickstart                                   # COSMOS -> results/quickstart.json
    HF_HUB_OFFLINE=1 ldlm train ldlm_quick && HF_HUB_OFFLINE=1 ldlm report runs/ldlm_quick --out results/ldlm_quick.json
    HF_HUB_OFFLINE=1 ldlm evaluate runs/quickstart && HF_HUB_OFFLINE=1 ldlm evaluate runs/ldlm_quick -n 64   # MAUVE
    python scripts/compare_recipes.py

Optimiser steps count every training stage of the recipe (COSMOS: head pre-training + autoencoder +
diffusion; LDLM: joint + token-decoder post-training), read from each run's resolved ``config.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ldlm.storage.io import atomic_write_json

STAGES = {
    "cosmos": [("autoencoder", "head_pretrain_steps"), ("autoencoder_train", "steps"), ("diffusion_train", "steps")],
    "ldlm": [("joint_train", "steps"), ("decoder_train", "steps")],
}


def training_steps(run_dir: Path, recipe: str) -> int:
    """Sum of the optimiser steps of every stage the recipe trains (from the run's resolved config)."""
    cfg = json.loads((run_dir / "config.json").read_text())
    return sum(int(cfg.get(section, {}).get(key, 0) or 0) for section, key in STAGES[recipe])


def row(report_path: Path, recipe: str, evaluation: Path | None = None) -> dict:
    """The comparison figures of one `ldlm report` JSON, plus MAUVE from an `ldlm evaluate` JSON if given."""
    rep = json.loads(report_path.read_text())
    if rep.get("recipe", "cosmos") != recipe:
        raise SystemExit(f"{report_path} is a {rep.get('recipe')!r} run, expected {recipe!r}")
    out = {
        "judge": rep["judge"],
        "judge_ppl": rep["judge_ppl_trained"],
        "judge_ppl_untrained": rep["judge_ppl_untrained"],
        "entropy": rep["trained_stats"]["entropy"],
        "entropy_untrained": rep["untrained_stats"]["entropy"],
        "short_samples": sum(len(t.split()) < 5 for t in rep["samples"]),
        "num_samples": rep["num_samples"],
        "heldout_token_accuracy": rep["heldout_token_accuracy"],
        "steps": training_steps(Path(rep["run_dir"]), recipe),
        "wall_minutes": rep["wall_minutes"],
        "train_minutes": rep["train_minutes"],
        "report": str(report_path),
    }
    if evaluation is not None and evaluation.exists():
        ev = json.loads(evaluation.read_text())
        out["mauve"] = ev["model"]["mauve"]  # {mean, std, n} over seeds
        out["mauve_reference"] = ev["reference"]["mauve"]
        out["mauve_protocol"] = {k: ev["protocol"][k] for k in ("num_samples", "seeds", "mauve_max_len")}
        out["evaluation"] = str(evaluation)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cosmos", type=Path, default=Path("results/quickstart.json"))
    parser.add_argument("--ldlm", type=Path, default=Path("results/ldlm_quick.json"))
    parser.add_argument("--cosmos-eval", type=Path, default=Path("results/quickstart_report.json"))
    parser.add_argument("--ldlm-eval", type=Path, default=Path("results/ldlm_quick_report.json"))
    parser.add_argument("--out", type=Path, default=Path("results/ldlm_vs_cosmos.json"))
    args = parser.parse_args()
    result = {"cosmos": row(args.cosmos, "cosmos", args.cosmos_eval), "ldlm": row(args.ldlm, "ldlm", args.ldlm_eval)}
    atomic_write_json(args.out, result)
    for name, r in result.items():
        print(
            f"{name:6s} judge PPL {r['judge_ppl']:8.1f} (untrained {r['judge_ppl_untrained']:8.1f}) "
            f"entropy {r['entropy']:.2f}  steps {r['steps']}  wall {r['wall_minutes']:.1f} min"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
