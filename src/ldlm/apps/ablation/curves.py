"""Probe curves of an ablation table, averaged over seeds per row (COSMOS Fig. 3-4, LDLM Fig. 3-4 at small
scale): decoder robustness (BLEU of ``decode(z + σε)`` per σ) and interpolation smoothness (judge PPL of
``decode(μ z₁ + (1-μ) z₂)`` per μ), one line per row, in one PNG beside the table's JSON; and the table itself
as bars per row (mean ± std, seeds as dots) with the paper's numbers beside them."""

from __future__ import annotations

import statistics
from pathlib import Path

from ldlm.apps.ablation.spec import AblationSpec

__all__ = ["PROBE_CURVES", "mean_probe_curves", "plot_probe_curves", "plot_row_figures"]

# probe -> (x key, curve name, y key, panel title, y label, log y)
PROBE_CURVES = {
    "robustness": ("sigma", "decoded", "bleu", "decoder robustness", "BLEU of decode(z + σε) vs source", False),
    "interpolation": ("mu", "no noise", "judge_ppl", "interpolation smoothness", "judge PPL at μz₁ + (1-μ)z₂", True),
}


def _mean(values: list[float | None]) -> float | None:
    """Mean over seeds; None when any seed has no value at this x (an undefined point is not averaged away)."""
    return None if not values or any(v is None for v in values) else statistics.fmean(values)


def mean_probe_curves(spec: AblationSpec, results: dict[str, list[dict]]) -> dict:
    """``{probe: {"x": [...], "x_name", "rows": {label: {"mean": [...], "seeds": [...]}}}}`` from the per-run
    JSONs of each row (``results``: row name -> its runs); probes no run measured are left out."""
    out: dict = {}
    for probe, (x_key, curve, y_key, *_) in PROBE_CURVES.items():
        rows = {}
        for row in spec.rows:
            runs = [r for r in results.get(row.name, []) if probe in r.get("probes", {})]
            if not runs:
                continue
            x = runs[0]["probes"][probe][x_key]
            ys = [r["probes"][probe]["curves"][curve][y_key] for r in runs if r["probes"][probe][x_key] == x]
            rows[row.title] = {"mean": [_mean(list(v)) for v in zip(*ys, strict=True)], "seeds": len(ys)}
            out.setdefault(probe, {"x_name": x_key, "x": x, "rows": {}})
        if rows:
            out[probe]["rows"] = rows
    return out


def plot_probe_curves(curves: dict, out: str | Path, title: str) -> Path | None:
    """One panel per probe, one line per row (mean over its seeds); None when there are no curves."""
    from ldlm.reporting.figures import plot_curves

    if not curves:
        return None
    panels, log_panels = [], []
    for probe, data in curves.items():
        _, _, _, name, ylabel, log_y = PROBE_CURVES[probe]
        series = {f"{label} (n={row['seeds']})": (data["x"], row["mean"]) for label, row in data["rows"].items()}
        panels.append((f"{name} (x: {data['x_name']})", ylabel, series))
        if log_y:
            log_panels.append(panels[-1][0])
    return plot_curves(out, panels, xlabel="σ / μ", title=title, log_panels=log_panels)


def _short(label: str, width: int = 24) -> str:
    """A row label fit for an axis tick: without its parenthesised remark, at most ``width`` characters."""
    text = label.split(" (")[0]
    return text if len(text) <= width else text[: width - 1] + "…"


def plot_row_figures(agg: dict, out: str | Path) -> Path | None:
    """One panel per metric of the aggregated table (:func:`ldlm.apps.ablation.table.aggregate`): a bar per measured row
    and for the real held-out texts, the paper's numbers as diamonds on their own axis; None when nothing is
    measured. Values are in the table's units (``scale``)."""
    from ldlm.reporting.figures import plot_report

    def scaled(summary: dict, factor: float) -> dict:
        values = [None if v is None else v * factor for v in summary["values"]]
        if summary["mean"] is None:
            return {**summary, "values": values}
        return {**summary, "mean": summary["mean"] * factor, "std": summary["std"] * factor, "values": values}

    metrics, scale = agg["metrics"], agg["scale"]
    sources = [(_short(r["label"]), r["ours"], r["paper"]) for r in agg["rows"] if r["runnable"] and r["seeds"]]
    if not sources:
        return None
    if any(agg["reference"][m]["n"] for m in metrics):
        sources.append(("real held-out", agg["reference"], agg["paper_reference"]))
    rows = {label: {m: scaled(ours[m], scale.get(m, 1.0)) for m in metrics} for label, ours, _ in sources}
    paper = {label: figures for label, _, figures in sources}
    labels = {m: agg["labels"][m] + (f" (×{scale[m]:g})" if m in scale else "") for m in metrics}
    title = f"{agg['title']}\nbars: ours, mean ± std over seeds (dots); red ◆: the paper's number (red right axis)"
    return plot_report(out, rows, metrics, title, paper=paper, labels=labels, ncols=3)
