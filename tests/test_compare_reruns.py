"""scripts/compare_reruns.py: ablation rows before (an archive of per-run JSONs) and after a code change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reruns():
    return load_script("compare_reruns")


def _run(folder: Path, row: str, seed: int, ppl: float, sampler: str, commit: str | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    result = {
        "row": row,
        "label": row.upper(),
        "seed": seed,
        "metrics": {"judge_ppl": ppl, "mauve": 0.1},
        "protocol": {"sampling_steps": 200, "sampler": sampler},
        "summary": {"train_minutes": 10.0, **({"code": {"git_commit": commit}} if commit else {})},
    }
    (folder / f"{row}-seed{seed}.json").write_text(json.dumps(result))


def test_rows_on_both_sides_are_compared_with_seeds_sampler_and_code(reruns, tmp_path):
    archive, current = tmp_path / "archive", tmp_path / "results"
    for seed, ppl in ((0, 100.0), (1, 300.0), (2, 200.0)):
        _run(archive, "base", seed, ppl, "euler_maruyama", None)
    _run(archive, "only_before", 0, 1.0, "euler_maruyama", None)
    _run(current / "t", "base", 0, 50.0, "ddpm", "abc")
    _run(current / "t", "base", 1, 70.0, "ddpm", "abc")
    _run(current / "t", "only_after", 0, 1.0, "ddpm", "abc")
    out = reruns.compare("t", archive, current)
    assert list(out["rows"]) == ["base"]  # a row needs runs on both sides
    base = out["rows"]["base"]
    assert base["paired_seeds"] == [0, 1] and base["label"] == "BASE"
    assert base["before"]["judge_ppl"]["mean"] == pytest.approx(200.0) and base["before"]["judge_ppl"]["n"] == 3
    assert base["after"]["judge_ppl"]["mean"] == pytest.approx(60.0) and base["after"]["seeds"] == [0, 1]
    assert base["before"]["sampling"] == ["200 euler_maruyama"] and base["after"]["sampling"] == ["200 ddpm"]
    assert base["before"]["code"] == ["unrecorded"] and base["after"]["code"] == ["abc"]
