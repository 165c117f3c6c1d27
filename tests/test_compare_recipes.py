"""scripts/compare_recipes.py: rows of results/ldlm_vs_cosmos.json from a run directory and its `ldlm evaluate` JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import load_script


@pytest.fixture(scope="module")
def recipes():
    return load_script("compare_recipes")


def _stats(mean: float) -> dict:
    return {"mean": mean, "std": 0.0, "values": [mean]}


def _run(tmp_path: Path, name: str, minutes: float, acc: float) -> tuple[Path, Path]:
    run = tmp_path / "runs" / name
    (run / "joint").mkdir(parents=True)
    (run / "config.json").write_text(
        json.dumps(
            {
                "recipe": "ldlm",
                "encoder": {"name": "smollm2-135m"},
                "joint_train": {"steps": 2200},
                "decoder_train": {"steps": 700},
            }
        )
    )
    (run / "summary.json").write_text(json.dumps({"train_minutes": minutes, "heldout_token_accuracy": acc}))
    (run / "joint" / "metrics.jsonl").write_text('{"step": 50}\n{"step": 2017}\n')
    ev = tmp_path / f"{name}_report.json"
    model = {k: _stats(v) for k, v in (("judge_ppl", 200.0), ("entropy", 2.9), ("mauve", 0.2), ("div", 0.8))}
    ev.write_text(
        json.dumps(
            {
                "model": model,
                "protocol": {"judge": "smollm2-135m"},
                "reference": {"judge_ppl": _stats(50.0)},
                "collapse": None,
            }
        )
    )
    return run, ev


def _main(recipes, monkeypatch, *argv: str) -> dict:
    monkeypatch.setattr(sys, "argv", ["compare_recipes.py", *argv])
    recipes.main()
    return json.loads(Path(argv[argv.index("--out") + 1]).read_text())


def test_update_keeps_earlier_rows_and_commands(recipes, tmp_path, monkeypatch):
    out = tmp_path / "ldlm_vs_cosmos.json"
    run_a, ev_a = _run(tmp_path, "a", 60.0, 0.7)
    first = _main(recipes, monkeypatch, "--row", f"a={run_a}:{ev_a}", "--command", "train a", "--out", str(out))
    assert first["a"]["steps"] == 2900 and first["a"]["steps_done"] == {"joint": 2017}
    assert first["a"]["judge_ppl_ratio"] == pytest.approx(4.0) and first["budget_spread"] == 0.0
    run_b, ev_b = _run(tmp_path, "b", 66.0, 0.8)
    for path in (run_a / "summary.json", run_a / "config.json"):
        path.unlink()  # row a's run directory is gone: --update must not need it
    both = _main(
        recipes,
        monkeypatch,
        "--update",
        "--row",
        f"b={run_b}:{ev_b}",
        "--extra-minutes",
        "b=0",
        "--command",
        "train b",
        "--command",
        "train a",
        "--out",
        str(out),
    )
    assert both["a"] == first["a"] and both["b"]["heldout_token_accuracy"] == 0.8
    assert both["budget_spread"] == pytest.approx(0.1)
    assert both["commands"] == ["train a", "train b"]
    png = recipes.plot_tradeoff(both, tmp_path / "tradeoff.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # without --update the file holds only the rows given
    only_b = _main(recipes, monkeypatch, "--row", f"b={run_b}:{ev_b}", "--out", str(out))
    assert set(only_b) == {"b", "reference", "budget_spread", "commands"}
