"""Learning-curve plots from a run's ``metrics.jsonl`` logs (matplotlib, headless)."""

from __future__ import annotations

import json
from pathlib import Path


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def plot_learning_curves(run_dir: str | Path, out: str | Path, title: str = "") -> Path:
    """One PNG of a run's learning curves: COSMOS (autoencoder, then diffusion) or LDLM (the joint stage)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir, out = Path(run_dir), Path(out)
    ae = read_metrics(run_dir / "autoencoder" / "metrics.jsonl")
    diff = read_metrics(run_dir / "diffusion" / "metrics.jsonl")
    joint = read_metrics(run_dir / "joint" / "metrics.jsonl")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))

    def curve(ax, rows, key, label, **kw):
        pts = [(r["step"], r[key]) for r in rows if key in r and r[key] is not None]
        if pts:
            ax.plot(*zip(*pts, strict=False), label=label, **kw)

    if joint:  # LDLM: one joint stage, L = L_diff + L_h + L_w
        for key, label in (("ce", "train L_w (CE)"), ("mse", "train L_h (MSE)"), ("diff", "train L_diff")):
            curve(axes[0], joint, key, label)
        axes[0].set_title("joint training")
        curve(axes[1], joint, "val_acc", "held-out token accuracy", marker="o")
        curve(axes[1], joint, "val_mse", "held-out MSE(h, h_hat)", marker="s")
        curve(axes[1], joint, "val_diffusion_loss", "held-out x0-MSE (fixed t grid)", marker="^")
        axes[1].set_title("validation (clean input)")
        curve(axes[2], joint, "gamma", "warmup gamma(s)")
        curve(axes[2], joint, "latent_std", "latent std")
        axes[2].set_title("diffusion-to-encoder warmup")
    else:
        _cosmos_curves(axes, ae, diff, curve)
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return out


def _cosmos_curves(axes, ae: list[dict], diff: list[dict], curve) -> None:
    """COSMOS: autoencoder train/validation, then diffusion train/validation."""
    curve(axes[0], ae, "ce", "train CE (sampled softmax)")
    curve(axes[0], ae, "mse", "train MSE(h, h_hat)")
    curve(axes[0], ae, "aug", "augmentation strength", linestyle=":")
    axes[0].set_title("autoencoder training")
    curve(axes[1], ae, "val_acc", "held-out token accuracy", marker="o")
    curve(axes[1], ae, "val_mse", "held-out MSE(h, h_hat)", marker="s")
    axes[1].set_title("autoencoder validation (clean input)")
    curve(axes[2], diff, "loss", "train x0-MSE")
    curve(axes[2], diff, "val_loss", "held-out x0-MSE (fixed t grid)", marker="o")
    axes[2].set_title("latent diffusion")
