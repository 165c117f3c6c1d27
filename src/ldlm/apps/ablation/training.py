"""Training dynamics of an ablation table's runs (LDLM Fig. 3 middle/right: diffusion loss and decoder accuracy
over training per warmup; Fig. 4 left/middle: diffusion loss, latent std, L_h and accuracy per σ_dec), read from
each stage's ``metrics.jsonl``, averaged over seeds per row and plotted one panel per curve."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from ldlm.apps.ablation.spec import AblationSpec

__all__ = [
    "TRAINING_CURVES",
    "keep_earlier_curves",
    "mean_training_curves",
    "plot_training_curves",
    "run_training_log",
    "training_log",
]

# "stage/key" of a run's STAGE/metrics.jsonl -> (panel title, y label, log y). Train keys are means over the
# logging window; val_* keys are the EMA weights on held-out rows every eval_every steps.
TRAINING_CURVES = {
    "joint/diff": ("joint: diffusion loss (train)", "L_diff", True),
    "joint/latent_std": ("joint: latent std (train)", "coordinate-wise std of z₀", False),
    "joint/mse": ("joint: hidden-state loss (train)", "L_h = MSE(h, D_h(z₀ + σ_dec ε))", True),
    "joint/val_acc": ("joint: held-out token accuracy", "accuracy of D_w(D_h(z₀))", False),
    "autoencoder/mse": ("autoencoder: MSE(h, ĥ) (train)", "on perturbed inputs", True),
    "autoencoder/val_acc": ("autoencoder: held-out accuracy", "token accuracy (clean inputs)", False),
    "diffusion/loss": ("diffusion stage: loss (train)", "L_diff at the sampled t", True),
}


def training_log(run_dir: str | Path) -> dict[str, dict[str, list[float]]]:
    """``{"stage/key": {"step": [...], "value": [...]}}`` for the :data:`TRAINING_CURVES` a run logged; empty when
    the run directory (or its logs) is gone, e.g. for a run trained on another machine."""
    out: dict[str, dict[str, list[float]]] = {}
    for name in TRAINING_CURVES:
        stage, key = name.split("/")
        path = Path(run_dir, stage, "metrics.jsonl")
        if not path.is_file():
            continue
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        if points:
            out[name] = {"step": [s for s, _ in points], "value": [v for _, v in points]}
    return out


def run_training_log(result: dict) -> dict:
    """A per-run JSON's ``training`` log; for runs measured before it was recorded, read from its run directory."""
    if "training" in result:
        return result["training"]
    return training_log(result["run_dir"]) if result.get("run_dir") else {}


def mean_training_curves(spec: AblationSpec, results: dict[str, list[dict]]) -> dict:
    """``{"stage/key": {label: {"step": [...], "mean": [...], "seeds": n}}}``: per row the mean over the seeds at
    the steps every seed logged. ``results``: row name -> its per-run dicts (:func:`run_training_log`)."""
    out: dict[str, dict] = {}
    for row in spec.rows:
        logs = [log for log in map(run_training_log, results.get(row.name, [])) if log]
        for name in TRAINING_CURVES:
            series = [dict(zip(log[name]["step"], log[name]["value"], strict=True)) for log in logs if name in log]
            if not series:
                continue
            steps = sorted(set.intersection(*(set(s) for s in series)))
            mean = [statistics.fmean(s[step] for s in series) for step in steps]
            out.setdefault(name, {})[row.title] = {"step": steps, "mean": mean, "seeds": len(series)}
    return out


def keep_earlier_curves(curves: dict, previous: dict, rows: list[dict]) -> dict:
    """``curves`` plus the previous aggregate's curves of rows that now have none but the same seeds.

    Runs measured before per-run JSONs carried their training log are read from their run directories; in a
    fresh checkout those are gone, and re-aggregating must not erase the table's curves. ``previous``: the
    last ``TABLE.json`` (``{}`` if none); ``rows``: the new aggregate's rows (``label``, ``seeds``).
    """
    earlier_seeds = {row["label"]: row.get("seeds") for row in previous.get("rows", [])}
    seeds = {row["label"]: row["seeds"] for row in rows}
    out = {name: dict(by_label) for name, by_label in curves.items()}
    for name, by_label in previous.get("training_curves", {}).items():
        for label, curve in by_label.items():
            if label not in out.get(name, {}) and seeds.get(label) and earlier_seeds.get(label) == seeds[label]:
                out.setdefault(name, {})[label] = curve
    return out


def plot_training_curves(curves: dict, out: str | Path, title: str, ncols: int = 4) -> Path | None:
    """One panel per logged curve, one line per row (mean over its seeds), one legend for the figure; None
    when no run has a training log."""
    from ldlm.reporting.figures import _pyplot, save_figure

    if not curves:
        return None
    plt = _pyplot()
    names = [n for n in TRAINING_CURVES if n in curves]
    ncols = min(ncols, len(names))
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.4 * nrows + 1.2), squeeze=False)
    labels = list(dict.fromkeys(label for n in names for label in curves[n]))
    colors = {label: plt.get_cmap("tab10")(i % 10) for i, label in enumerate(labels)}
    for ax, name in zip(axes.flat, names, strict=False):
        panel, ylabel, log_y = TRAINING_CURVES[name]
        for label, row in curves[name].items():
            ax.plot(row["step"], row["mean"], color=colors[label], marker="." if len(row["step"]) < 12 else None)
        ax.set(title=panel, xlabel="step", ylabel=ylabel)
        if log_y:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=colors[label]) for label in labels]
    seeds = {label: max(curves[n][label]["seeds"] for n in names if label in curves[n]) for label in labels}
    legend = [f"{label} (n={seeds[label]})" for label in labels]
    fig.legend(handles, legend, loc="lower center", ncol=min(3, len(labels)), fontsize=8, frameon=False)
    fig.suptitle(f"{title}\ntraining dynamics, mean over seeds per row")
    return save_figure(fig, out, rect=(0, 0.03 + 0.03 * math.ceil(len(labels) / 3) / nrows, 1, 1))
