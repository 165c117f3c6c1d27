"""`ldlm curve`: quality of a run's kept checkpoints against training minutes (issue 21's learning curves)."""

from __future__ import annotations

import json

import pytest
from test_ar import TINY_AR
from test_evaluation_suite import FakeJudge

from ldlm import cli
from ldlm.evaluation import suite
from ldlm.evaluation.curve import curve_points
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


def test_curve_command_without_checkpoints_is_a_clear_error(tmp_path, capsys):
    run = tmp_path / "r"
    (run / "ar").mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"train_minutes": 1.0}))
    monkey_args = ["curve", str(run), "-n", "4"]
    assert cli.main(monkey_args) == 2
    assert "error" in capsys.readouterr().err
