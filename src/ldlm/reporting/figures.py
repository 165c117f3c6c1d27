"""PNG figures of the evaluation suite, sweeps and probes (matplotlib, headless, written atomically)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["plot_curves", "plot_report", "save_figure"]

# x/y series: label -> (xs, ys); None values in ys are left out of the line.
Series = dict[str, tuple[Sequence[float], Sequence[float | None]]]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out: str | Path, dpi: int = 110, rect: tuple[float, float, float, float] | None = None) -> Path:
    """Save ``fig`` to a temporary PNG beside ``out``, rename it into place, close the figure. ``rect``: the part
    of the figure the axes may fill (e.g. room below for a figure legend)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.png")
    fig.tight_layout(rect=rect)
    fig.savefig(tmp, dpi=dpi)
    _pyplot().close(fig)
    tmp.replace(out)
    return out


def plot_curves(
    out: str | Path,
    panels: Sequence[tuple[str, str, Series]],
    *,
    xlabel: str,
    title: str = "",
    logx: bool = False,
    log_panels: Sequence[str] = (),
) -> Path:
    """One row of line plots; ``panels`` = (title, ylabel, series); panels named in ``log_panels`` use log y.
    String x values (e.g. frequency buckets) are categories: evenly spaced, in order of first appearance, and every
    panel shows all of them, also where a series has no value there."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.8), squeeze=False)
    xs_all = [x for _, _, series in panels for xs, _ in series.values() for x in xs]
    categories = list(dict.fromkeys(x for x in xs_all if isinstance(x, str)))
    position = {c: i for i, c in enumerate(categories)}
    for ax, (name, ylabel, series) in zip(axes[0], panels, strict=True):
        for label, (xs, ys) in series.items():
            xs = [position.get(x, x) if isinstance(x, str) else x for x in xs]
            pts = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=label)
        ax.set(title=name, xlabel=xlabel, ylabel=ylabel)
        if categories:
            ax.set_xticks(range(len(categories)), categories, rotation=30, ha="right", fontsize=8)
            ax.set_xlim(-0.5, len(categories) - 0.5)
        if logx:
            ax.set_xscale("log")
        if name in log_panels:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, out)


def plot_report(
    out: str | Path,
    rows: dict[str, dict],
    metrics: Sequence[str],
    title: str = "",
    *,
    paper: dict[str, dict] | None = None,
    labels: dict[str, str] | None = None,
    ncols: int | None = None,
) -> Path:
    """Bar per row (model, reference) and metric: mean with a ±std bar and the per-seed values as dots.
    ``paper``: row -> metric -> the paper's number, drawn as red diamonds on a red right-hand axis of its own (the
    scales differ; the *ordering* is what compares). ``labels``: metric -> panel title; ``ncols``: panels per line
    (default: all on one line)."""
    plt = _pyplot()
    ncols = min(ncols or len(metrics), len(metrics))
    nrows = -(-len(metrics) // ncols)
    width = max(3.2, 0.55 * len(rows) + 1.6)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, 4.2 * nrows), squeeze=False)
    for ax in axes.flat[len(metrics) :]:
        ax.set_visible(False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for i, summaries in enumerate(rows.values()):
            s = summaries[metric]
            if s["mean"] is None:
                ax.text(i, 0, "n/a", ha="center")
                continue
            ax.bar(i, s["mean"], yerr=s["std"], capsize=4, color=f"C{i}", alpha=0.7)
            values = [v for v in s["values"] if v is not None]
            ax.plot([i] * len(values), values, "k.", markersize=4)
        marks = [(i, (paper or {}).get(row, {}).get(metric)) for i, row in enumerate(rows)]
        marks = [(i, v) for i, v in marks if v is not None]
        if marks:
            twin = ax.twinx()
            twin.plot(*zip(*marks, strict=True), "D", color="red", markersize=6)
            twin.tick_params(axis="y", colors="red")
        rotate = len(rows) > 3 or max(map(len, rows)) > 12
        ax.set_xticks(range(len(rows)), list(rows), rotation=40 if rotate else 0, ha="right" if rotate else "center")
        ax.set_title((labels or {}).get(metric, metric), fontsize=9)
        if metric.startswith("judge_ppl"):
            ax.set_yscale("log")
            if marks:
                twin.set_yscale("log")
        ax.grid(alpha=0.3, axis="y")
    if title:
        fig.suptitle(title)
    return save_figure(fig, out)
