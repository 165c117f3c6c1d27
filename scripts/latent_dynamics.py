"""Latent std, L_h and the warmup gamma against joint-training steps for LDLM runs side by side (issue 22): does
the diffusion loss shrink the latents once gamma rises? Reads each run's ``joint/metrics.jsonl``.

    python scripts/latent_dynamics.py runs/ldlm_roc45k runs/ldlm_roc45k_lowgamma --out results/ldlm_roc45k_latents
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ldlm.storage.io import atomic_write_json

CURVES = ("latent_std", "mse", "diff", "gamma", "t_below_02", "t_above_05")


def curves(run_dir: Path) -> dict:
    """{metric: [[step, value], ...]} of the training rows, and the held-out rows' val_* metrics."""
    rows = [json.loads(line) for line in (run_dir / "joint" / "metrics.jsonl").read_text().splitlines()]
    out = {k: [[r["step"], r[k]] for r in rows if k in r] for k in CURVES}
    out.update({k: [[r["step"], r[k]] for r in rows if k in r] for k in ("val_mse", "val_latent_std")})
    return {k: v for k, v in out.items() if v}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.png")
    args = parser.parse_args()
    data = {run.name: curves(run) for run in args.runs}
    atomic_write_json(args.out.with_suffix(".json"), {"runs": {str(r): data[r.name] for r in args.runs}})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("latent_std", "latent std (train batch)"), ("val_mse", "held-out MSE(h, h_hat)"), ("gamma", "gamma")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.3))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for name, c in data.items():
            if key in c:
                ax.plot(*zip(*c[key], strict=True), label=name)
        ax.set_title(title)
        ax.set_xlabel("joint step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    tmp = args.out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(args.out.with_suffix(".png"))
    print(f"wrote {args.out.with_suffix('.json')} and .png")


if __name__ == "__main__":
    main()
