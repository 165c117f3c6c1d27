"""`ldlm curve`: quality of a run's kept checkpoints against training minutes (issue 21's learning curves)."""

from __future__ import annotations

import json

import pytest
from test_ar import TINY_AR
from test_evaluation_suite import FakeJudge

from ldlm import cli
from ldlm.evaluation import suite
from ldlm.evaluation.curve import curve_points, power_law_trend
from ldlm.pipeline import load_model


@pytest.fixture(scope="module")
def run_with_checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("curve_run")
    overrides = [*TINY_AR, "ar_train.save_every=4", "ar_train.keep_checkpoints=10", "ar_train.log_every=4"]
    assert cli.main(["train", "tiny", *overrides, f"output_dir={root}/{{name}}", "--quiet"]) == 0
    return root / "tiny"


def test_curve_points_are_the_kept_checkpoints_in_training_minutes(run_with_checkpoints):
    points = curve_points(run_with_checkpoints)
    assert [p[0] for p in points] == [4, 8, 12, 16]  # checkpoints at 4, 8, 12 and the final model at 16
    assert points[-1][2] is None and all(p[2].name.startswith("step_") for p in points[:-1])
    minutes = [p[1] for p in points]
    assert minutes == sorted(minutes) and minutes[0] > 0
    summary = json.loads((run_with_checkpoints / "summary.json").read_text())
    assert minutes[-1] == pytest.approx(summary["train_minutes"])
    nearest = curve_points(run_with_checkpoints, minutes=[minutes[1] + 1e-6])
    assert [p[0] for p in nearest] == [8, 16]


def test_curve_command_scores_every_point_and_flags_collapse(run_with_checkpoints, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(suite, "ScoringJudge", FakeJudge)
    out = tmp_path / "curve.json"
    rc = cli.main(["curve", str(run_with_checkpoints), "-n", "4", "--seeds", "0", "--out", str(out)])
    assert rc == 0
    saved = json.loads(out.read_text())
    (curve,) = saved["curves"].values()
    assert [r["step"] for r in curve["rows"]] == [4, 8, 12, 16]
    assert all("collapsed" in r["collapse"] for r in curve["rows"])
    assert set(saved["reference"]) >= {"judge_ppl", "entropy", "mauve", "div"}
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    # the final row is the saved model; an earlier row really used its checkpoint's weights
    final = load_model(run_with_checkpoints).generate(4, seed=0)
    assert curve["rows"][-1]["first_sample"] == final[0]
    assert "min (step 4)" in capsys.readouterr().out
    # --replot rebuilds the JSON (with the PPL trend toward 2x real) and the PNG from the saved file, no scoring
    monkeypatch.setattr(suite, "ScoringJudge", None)
    again = tmp_path / "again.json"
    assert cli.main(["curve", "--replot", str(out), "--out", str(again)]) == 0
    replotted = json.loads(again.read_text())
    (trend,) = (c["trend"]["judge_ppl"] for c in replotted["curves"].values())
    assert trend["target"] == pytest.approx(2 * saved["reference"]["judge_ppl"]["mean"])
    assert again.with_suffix(".png").is_file()


def _rows(minutes, ppl):
    return [{"minutes": m, "judge_ppl": {"mean": v}} for m, v in zip(minutes, ppl, strict=True)]


def test_power_law_trend_recovers_the_exponent_and_the_minutes_to_target():
    minutes = [10.0, 20.0, 40.0, 80.0]
    rows = _rows(minutes, [1000 * m**-0.5 for m in minutes])
    trend = power_law_trend(rows, "judge_ppl", target=1000 * 320.0**-0.5)
    assert trend["exponent"] == pytest.approx(-0.5)
    assert trend["minutes_to_target"] == pytest.approx(320.0)
    assert trend["fit"].endswith("last 3 points")  # only the latest points: the early fall is steeper


def test_power_law_trend_of_a_rising_curve_never_reaches_a_lower_target():
    trend = power_law_trend(_rows([10.0, 20.0, 40.0], [500.0, 520.0, 560.0]), "judge_ppl", target=100.0)
    assert trend["exponent"] > 0 and trend["minutes_to_target"] is None


def test_curve_command_without_checkpoints_is_a_clear_error(tmp_path, capsys):
    run = tmp_path / "r"
    (run / "ar").mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"train_minutes": 1.0}))
    monkey_args = ["curve", str(run), "-n", "4"]
    assert cli.main(monkey_args) == 2
    assert "error" in capsys.readouterr().err
