"""Write an evaluation report as JSON + Markdown + one PNG, each atomically, side by side."""

from __future__ import annotations

from pathlib import Path

from ldlm.evaluation.suite import METRICS
from ldlm.reporting.figures import plot_report
from ldlm.storage.io import atomic_write_json, atomic_write_text

__all__ = ["report_markdown", "reproduce_command", "write_report"]

_LABELS = {
    "judge_ppl": "judge PPL (token-level) ↓",
    "judge_ppl_per_sample": "judge PPL (per-sample mean) ↓",
    "mauve": "MAUVE ↑",
    "div": "Div",
    "entropy": "entropy (nats)",
    "mem": "Mem",
}


def _cell(summary: dict) -> str:
    if summary["mean"] is None:
        return "n/a"
    digits = 1 if abs(summary["mean"]) >= 10 else 3 if abs(summary["mean"]) >= 0.1 else 4
    return f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f}"


def reproduce_command(report: dict, out: str | Path | None = None) -> str:
    """The ``ldlm evaluate`` command line that regenerates ``report`` (same run, settings and seeds)."""
    st = report["settings"]
    m = st["mauve"]
    args = [
        f"HF_HUB_OFFLINE=1 ldlm evaluate {report['run']} -n {st['num_samples']}",
        f"--seeds {','.join(map(str, st['seeds']))}",
        *([f"--steps {st['steps']}"] if st["steps"] else []),
        *([f"--sampler {st['sampler']}"] if st["sampler"] else []),
        f"--judge {st['judge']} --mauve-max-len {m['max_len']} --mauve-seed {m['seed']} --mauve-pooling {m['pooling']}",
        *([f"--source {st['source']}"] if st.get("source", "samples") != "samples" else []),
        *([f"--out {out}"] if out else []),
    ]
    return " ".join(args)


def report_markdown(report: dict, png_name: str, out: str | Path | None = None) -> str:
    """The report as a Markdown page: results table, protocol, warnings, first samples."""
    p = report["protocol"]
    what = "autoencoder round trips of held-out texts" if "source" in p else "samples"
    steps = "no sampling" if "source" in p else f"{p['sampling_steps']} {p['sampler']} steps"
    lines = [
        f"# Evaluation of `{report['config']}` ({report['run']})",
        "",
        f"{p['num_samples']} {what} × {len(p['seeds'])} seeds {p['seeds']}, {steps}; judge `{p['judge']}`; "
        "mean ± std over seeds. Reference = real held-out texts, same protocol.",
        "",
        "| texts | " + " | ".join(_LABELS[m] for m in METRICS) + " |",
        "|---|" + "---|" * len(METRICS),
    ]
    for row in ("model", "reference"):
        lines.append(f"| {row} | " + " | ".join(_cell(report[row][m]) for m in METRICS) + " |")
    lines += [
        "",
        f"![metrics]({png_name})",
        "",
        f"Reproduce: `{reproduce_command(report, out)}`",
        "",
        "## Protocol",
        "",
    ]
    lines += [f"- **{k}**: {v}" for k, v in p.items() if k != "mauve"]
    lines.append("- **mauve settings**: " + ", ".join(f"{k}={v}" for k, v in p["mauve"].items()))
    lines.append(
        f"- generation time: {report['generation_seconds_per_sample']:.3f} s per sample; "
        f"whole evaluation {report['seconds'] / 60:.1f} min"
    )
    if report["warnings"]:
        lines += ["", "## Warnings", "", *[f"- {w}" for w in report["warnings"]]]
    first = report["per_seed"][0]
    for title, key in (("Model samples", "samples"), ("Reference texts", "reference_samples")):
        lines += ["", f"## {title} (seed {first['seed']}, first {len(first[key])})", ""]
        lines += [f"{i}. {t}" for i, t in enumerate(first[key])]
    return "\n".join(lines) + "\n"


def write_report(report: dict, out: str | Path) -> dict[str, Path]:
    """``out`` = the JSON path; the ``.md`` and ``.png`` get the same stem. Returns the three paths."""
    out = Path(out)
    paths = {"json": out, "md": out.with_suffix(".md"), "png": out.with_suffix(".png")}
    plot_report(
        paths["png"],
        {row: report[row] for row in ("model", "reference")},
        METRICS,
        title=f"{report['config']}: {report['protocol']['num_samples']} samples × {len(report['protocol']['seeds'])} "
        f"seeds, judge {report['protocol']['judge']}",
    )
    atomic_write_text(paths["md"], report_markdown(report, paths["png"].name, out))
    atomic_write_json(paths["json"], report)
    return paths
