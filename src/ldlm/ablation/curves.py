"""Probe curves of an ablation table, averaged over seeds per row (COSMOS Fig. 3-4, LDLM Fig. 3-4 at small
scale): decoder robustness (BLEU of ``decode(z + σε)`` per σ) and interpolation smoothness (judge PPL of
``decode(μ z₁ + (1-μ) z₂)`` per μ), one line per row, in one PNG beside the table's JSON."""

from __future__ import annotations

import statistics
from pathlib import Path

from ldlm.ablation.spec import AblationSpec

__all__ = ["PROBE_CURVES", "mean_probe_curves", "plot_probe_curves"]

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
    from ldlm.evaluation.figures import plot_curves

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
