"""Learning-curve plots from a run's ``metrics.jsonl`` logs (matplotlib, headless)."""

from __future__ import annotations

import json
from pathlib import Path


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def plot_learning_curves(run_dir: str | Path, out: str | Path, title: str = "") -> Path:
    """One PNG: autoencoder train CE/MSE and held-out token accuracy; diffusion train/validation loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir, out = Path(run_dir), Path(out)
    ae = read_metrics(run_dir / "autoencoder" / "metrics.jsonl")
    diff = read_metrics(run_dir / "diffusion" / "metrics.jsonl")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))

    def curve(ax, rows, key, label, **kw):
        pts = [(r["step"], r[key]) for r in rows if key in r and r[key] is not None]
        if pts:
            ax.plot(*zip(*pts, strict=False), label=label, **kw)

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
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
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
