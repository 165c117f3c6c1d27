"""`ldlm ablate` on a tiny table (base `tiny`, 2 rows x 2 seeds, a few steps each): real training through the
recipe entry, real judge PPL / MAUVE / probes, then the bookkeeping: mean ± std per row, resumability, dry run,
spec errors before any training, not-run rows and the Markdown block."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml

from ldlm import cli
from ldlm.apps.ablation import load_spec
from ldlm.apps.ablation.run import read_result
from ldlm.apps.ablation.spec import ABLATION_DIR, AblationSpecError
from ldlm.apps.ablation.table import markdown_table, ordering_agreement
from ldlm.evaluation.suite import summarize
from ldlm.recipes import RECIPES

STAGES = ("autoencoder_train", "diffusion_train")
FAST = ["autoencoder_train.steps=4", "diffusion_train.steps=4", "encoder.stats_texts=64"]
FAST += [f"{stage}.{key}=4" for stage in STAGES for key in ("eval_every", "log_every")]
SPEC = {
    "name": "tiny_table",
    "title": "Tiny table",
    "paper": "none (test)",
    "base": "tiny",
    "common": FAST,
    "seeds": [0, 1],
    "metrics": ["judge_ppl", "mauve", "div", "heldout_token_accuracy", "mismatch", "robustness_bleu"],
    "evaluation": {"num_samples": 6, "steps": 3, "probe_texts": 4, "mauve_max_len": 32},
    "paper_reference": {"mauve": 0.9},
    "rows": [
        {"name": "base", "label": "all losses", "paper": {"mauve": 0.5, "judge_ppl": 60.0}},
        {"name": "no_mse", "overrides": ["autoencoder.mse_weight=0"], "paper": {"mauve": 0.3, "judge_ppl": 70.0}},
        {"name": "impossible", "runnable": False, "reason": "needs a token embedding trained from scratch"},
    ],
}
INTRO = "# Results\n\nHand-written intro that must survive.\n"


def write_spec(path: Path, **changes) -> Path:
    path.write_text(yaml.safe_dump({**SPEC, **changes}, sort_keys=False, allow_unicode=True))
    return path


def ablate(spec: Path, root: Path, *extra: str) -> int:
    args = ["--out-dir", str(root / "results"), "--runs-dir", str(root / "runs"), "--markdown", str(root / "doc.md")]
    return cli.main(["ablate", str(spec), *args, *extra])


@pytest.fixture
def no_training(monkeypatch):
    """Any training or measurement fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("trained or measured although nothing was to be done")

    for recipe in list(RECIPES):
        monkeypatch.setitem(RECIPES, recipe, refuse)
    monkeypatch.setattr("ldlm.apps.ablation.run.generate", refuse)
    monkeypatch.setattr("ldlm.apps.ablation.run.score", refuse)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """One real invocation: 2 runnable rows x 2 seeds trained and measured (about 20-30 s on 2 cores)."""
    root = tmp_path_factory.mktemp("ablate")
    (root / "doc.md").write_text(INTRO)
    spec = write_spec(root / "tiny_table.yaml")
    assert ablate(spec, root) == 0
    return root, spec, json.loads((root / "results" / "tiny_table.json").read_text())


def test_aggregate_is_mean_and_std_of_the_runs(table):
    root, _, agg = table
    rows = {r["name"]: r for r in agg["rows"]}
    for name in ("base", "no_mse"):
        row = rows[name]
        assert row["seeds"] == [0, 1] and len(row["runs"]) == 2
        runs = [json.loads(Path(p).read_text()) for p in row["runs"]]
        assert [r["seed"] for r in runs] == [0, 1] and all(r["trained_now"] for r in runs)
        for metric in SPEC["metrics"]:
            values = [r["metrics"][metric] for r in runs]
            assert all(isinstance(v, float) for v in values), (metric, values)
            assert row["ours"][metric]["mean"] == pytest.approx(statistics.fmean(values))
            assert row["ours"][metric]["std"] == pytest.approx(statistics.stdev(values))
        assert 0 < row["ours"]["mauve"]["mean"] <= 1  # the real MAUVE path, judge features
        assert row["command"].endswith(
            f"--seeds 0,1 --out-dir {root / 'results'} --runs-dir {root / 'runs'} "
            f"--markdown {root / 'doc.md'} --rows {name}"
        )
        assert f"seed=1 output_dir={root / 'runs' / 'tiny_table' / name / 'seed1'}" in row["train_commands"]["1"]
        assert runs[1]["train_command"] == row["train_commands"]["1"]
        assert (root / "runs" / "tiny_table" / name / "seed1" / "model").is_dir()
    assert rows["no_mse"]["overrides"][-1] == "autoencoder.mse_weight=0"
    assert rows["impossible"] == {**rows["impossible"], "runnable": False, "runs": [], "command": None}
    assert agg["protocol"]["judge"] == "smollm2-135m" and agg["evaluation"]["num_samples"] == 6
    assert agg["ordering_vs_paper"]["mauve"]["pairs"] == 1 and agg["reference"]["mauve"]["n"] == 2


def test_probe_curves_are_the_mean_of_the_runs_and_plotted(table):
    root, _, agg = table
    curves = agg["probe_curves"]["robustness"]
    assert curves["x_name"] == "sigma" and curves["x"][0] == 0.0 and "interpolation" not in agg["probe_curves"]
    for row in agg["rows"][:2]:
        probes = [json.loads(Path(p).read_text())["probes"]["robustness"] for p in row["runs"]]
        runs = [probe["curves"]["decoded"]["bleu"] for probe in probes]
        assert curves["rows"][row["label"]]["seeds"] == 2
        mean = [statistics.fmean(v) for v in zip(*runs, strict=True)]
        assert curves["rows"][row["label"]]["mean"] == pytest.approx(mean)
    assert (root / "results" / "tiny_table_probes.png").stat().st_size > 0
    assert (root / "results" / "tiny_table_rows.png").stat().st_size > 0
    doc = (root / "doc.md").read_text()
    assert "![tiny_table probe curves, mean over seeds per row](results/tiny_table_probes.png)" in doc
    assert "](results/tiny_table_rows.png)" in doc


def test_training_curves_are_the_mean_of_the_runs_logs_and_plotted(table):
    root, _, agg = table
    curves = agg["training_curves"]
    assert {"autoencoder/mse", "autoencoder/val_acc", "diffusion/loss"} <= set(curves)
    for row in agg["rows"][:2]:
        runs = [json.loads(Path(p).read_text())["training"] for p in row["runs"]]
        for name in ("autoencoder/val_acc", "diffusion/loss"):
            assert all(log[name]["step"] == [4] for log in runs)  # eval_every = log_every = steps = 4
            mean = curves[name][row["label"]]
            assert mean["seeds"] == 2 and mean["step"] == [4]
            assert mean["mean"] == pytest.approx([statistics.fmean(log[name]["value"][0] for log in runs)])
    assert (root / "results" / "tiny_table_training.png").stat().st_size > 0
    assert "](results/tiny_table_training.png)" in (root / "doc.md").read_text()


def test_training_log_keeps_logged_curves_and_means_use_the_steps_every_seed_logged(tmp_path):
    from ldlm.apps.ablation.training import mean_training_curves, run_training_log, training_log

    def write_log(run: str, rows: list[dict]) -> Path:
        (tmp_path / run / "joint").mkdir(parents=True)
        (tmp_path / run / "joint" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return tmp_path / run

    a = write_log(
        "a", [{"step": 50, "diff": 0.5, "lr": 1.0}, {"step": 100, "diff": 0.3}, {"step": 100, "val_acc": 0.2}]
    )
    b = write_log("b", [{"step": 50, "diff": 0.7}, {"step": 100, "diff": float("nan")}, {"step": 150, "diff": 0.1}])
    log_a = training_log(a)
    assert log_a == {
        "joint/diff": {"step": [50, 100], "value": [0.5, 0.3]},
        "joint/val_acc": {"step": [100], "value": [0.2]},
    }
    assert training_log(b)["joint/diff"] == {"step": [50, 150], "value": [0.7, 0.1]}  # a non-finite value is left out
    assert training_log(tmp_path / "gone") == {}
    spec = load_spec(write_spec(tmp_path / "tiny_table.yaml"), check_configs=False)
    runs = {"base": [{"training": log_a}, {"run_dir": str(b)}]}  # the second run: a JSON older than the field
    assert run_training_log(runs["base"][1]) == training_log(b)
    curves = mean_training_curves(spec, runs)
    assert curves["joint/diff"]["all losses"] == {"step": [50], "mean": [pytest.approx(0.6)], "seeds": 2}
    assert curves["joint/val_acc"]["all losses"] == {"step": [100], "mean": [0.2], "seeds": 1}


def test_reaggregating_without_run_dirs_keeps_the_earlier_curves_of_rows_with_the_same_seeds():
    """Old per-run JSONs read their training log from run directories, which a fresh checkout lacks: the table's
    curves must survive a re-aggregation there, but not when the row's seeds changed (they would be stale)."""
    from ldlm.apps.ablation.training import keep_earlier_curves

    old_curve = {"step": [50], "mean": [0.4], "seeds": 2}
    previous = {
        "rows": [{"label": "A", "seeds": [0, 1]}, {"label": "B", "seeds": [0]}, {"label": "C", "seeds": [0]}],
        "training_curves": {"joint/diff": {"A": old_curve, "B": old_curve, "C": old_curve}},
    }
    new_a = {"step": [50], "mean": [0.3], "seeds": 2}
    rows = [{"label": "A", "seeds": [0, 1]}, {"label": "B", "seeds": [0]}, {"label": "C", "seeds": [0, 1]}]
    kept = keep_earlier_curves({"joint/diff": {"A": new_a}}, previous, rows)
    assert kept == {"joint/diff": {"A": new_a, "B": old_curve}}  # A: recomputed wins; C: seeds changed, dropped
    assert keep_earlier_curves({}, {}, rows) == {}


def test_row_figure_shows_measured_rows_in_table_units_beside_the_papers(monkeypatch, tmp_path):
    from ldlm.apps.ablation.curves import plot_row_figures
    from ldlm.evaluation.suite import summarize

    drawn = {}
    monkeypatch.setattr(
        "ldlm.reporting.figures.plot_report",
        lambda out, rows, metrics, title, **kw: drawn.update(rows=rows, metrics=metrics, **kw) or Path(out),
    )
    row = {"runnable": True, "seeds": [0, 1], "ours": {"mauve": summarize([0.1, 0.3])}, "paper": {"mauve": 80.0}}
    agg = {
        "title": "T",
        "metrics": ["mauve"],
        "scale": {"mauve": 100},
        "labels": {"mauve": "MAUVE"},
        "rows": [
            {**row, "label": "full recipe (paper's final)"},
            {**row, "label": "never run", "seeds": []},
            {"label": "impossible", "runnable": False, "seeds": []},
        ],
        "reference": {"mauve": summarize([0.9])},
        "paper_reference": {"mauve": 100.0},
    }
    assert plot_row_figures(agg, tmp_path / "rows.png") == tmp_path / "rows.png"
    assert list(drawn["rows"]) == ["full recipe", "real held-out"]
    assert drawn["rows"]["full recipe"]["mauve"]["mean"] == pytest.approx(20.0)  # x100, the paper's unit
    assert drawn["rows"]["full recipe"]["mauve"]["values"] == pytest.approx([10.0, 30.0])
    assert drawn["paper"] == {"full recipe": {"mauve": 80.0}, "real held-out": {"mauve": 100.0}}
    assert drawn["labels"] == {"mauve": "MAUVE (×100)"}
    agg["rows"] = agg["rows"][1:]
    assert plot_row_figures(agg, tmp_path / "none.png") is None


def test_markdown_block_has_not_run_rows_and_is_replaced_not_duplicated(table, no_training):
    root, spec, _ = table
    assert ablate(spec, root, "--report-only") == 0
    assert ablate(spec, root) == 0  # everything measured already: only the table is rewritten
    text = (root / "doc.md").read_text()
    assert text.startswith(INTRO)
    assert text.count("<!-- ablate:tiny_table:start -->") == 1 and text.count("<!-- ablate:tiny_table:end -->") == 1
    lines = text.splitlines()
    impossible = next(line for line in lines if line.startswith("| impossible |"))
    assert "not run" in impossible and "needs a token embedding trained from scratch" in impossible
    base = next(line for line in lines if line.startswith("| all losses | 0,1 |"))
    assert "(0.5)" in base and "±" in base  # the paper's number beside ours
    assert "smollm2-135m" in text and "ldlm ablate" in text
    assert ablate(spec, root, "--report-only", "--seeds", "1") == 0  # one seed's call: the table's line keeps all
    agg = json.loads((root / "results" / "tiny_table.json").read_text())
    assert agg["command"].startswith(f"ldlm ablate {spec} --seeds 0,1 ")
    assert f"`HF_HUB_OFFLINE=1 ldlm ablate {spec} --seeds 0,1 " in (root / "doc.md").read_text()


def test_second_invocation_trains_nothing_and_reloads_a_saved_model(table, no_training, monkeypatch, capsys):
    root, spec, _ = table
    assert ablate(spec, root) == 0
    out = capsys.readouterr().out
    assert out.count("measured earlier") == 4
    monkeypatch.undo()  # measuring again is allowed now, training still is not
    for recipe in list(RECIPES):
        monkeypatch.setitem(RECIPES, recipe, lambda *a, **k: pytest.fail("retrained a saved run"))
    (root / "results" / "tiny_table" / "base-seed1.json").unlink()
    (root / "results" / "tiny_table" / "generated" / "base-seed1.json").unlink()
    assert ablate(spec, root, "--rows", "base") == 0
    assert "tiny_table base seed 1: " in capsys.readouterr().out
    result = json.loads((root / "results" / "tiny_table" / "base-seed1.json").read_text())
    assert result["trained_now"] is False and result["ablate_command"].endswith("--rows base")


def test_generate_only_then_scoring_elsewhere_gives_the_same_figures(table, monkeypatch, capsys):
    """Train + sample where no judge is (--generate-only), score later without the model: same numbers."""
    root, spec, _ = table
    results = root / "results" / "tiny_table"
    before = {seed: json.loads((results / f"no_mse-seed{seed}.json").read_text()) for seed in (0, 1)}
    for seed in (0, 1):
        (results / f"no_mse-seed{seed}.json").unlink()
    (results / "generated" / "no_mse-seed1.json").unlink()  # seed 1 is sampled again from the saved model
    monkeypatch.setattr("ldlm.evaluation.suite.scoring_judge", lambda *a, **k: pytest.fail("judge loaded"))
    assert ablate(spec, root, "--rows", "no_mse", "--generate-only") == 0
    assert "generated" in capsys.readouterr().out and not (results / "no_mse-seed1.json").exists()
    generated = json.loads((results / "generated" / "no_mse-seed1.json").read_text())
    assert generated["trained_now"] is False and generated["generated_on"] == "cpu"
    assert len(generated["suite"]["per_seed"][0]["model"]) == SPEC["evaluation"]["num_samples"]
    monkeypatch.undo()
    for recipe in list(RECIPES):  # scoring needs neither training nor the saved model
        monkeypatch.setitem(RECIPES, recipe, lambda *a, **k: pytest.fail("retrained"))
    monkeypatch.setattr("ldlm.apps.ablation.run.trained_model", lambda *a, **k: pytest.fail("model loaded to score"))
    assert ablate(spec, root, "--rows", "no_mse") == 0
    assert capsys.readouterr().out.count("scored the texts generated earlier on cpu") == 2
    for seed in (0, 1):
        after = json.loads((results / f"no_mse-seed{seed}.json").read_text())
        assert after["metrics"] == pytest.approx(before[seed]["metrics"]), seed
        assert after["samples"] == before[seed]["samples"]


def test_dry_run_prints_commands_and_trains_nothing(tmp_path, no_training, capsys):
    spec = write_spec(tmp_path / "tiny_table.yaml")
    assert ablate(spec, tmp_path, "--dry-run", "--seeds", "3") == 0
    out = capsys.readouterr().out
    assert "2 runs planned, 0 already measured" in out
    run_dir = tmp_path / "runs" / "tiny_table" / "base" / "seed3"
    assert f"ldlm train tiny {' '.join(FAST)} seed=3 output_dir={run_dir}" in out
    assert "impossible: not run: needs a token embedding trained from scratch" in out
    assert not (tmp_path / "results").exists() and not (tmp_path / "doc.md").exists()


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"rows": [{"name": "a", "overrides": ["autoencoder.num_latent=3"]}]}, "autoencoder.num_latent"),
        ({"rows": [{"name": "a", "overides": []}]}, "rows[0].overides"),
        ({"colour": "blue"}, "'colour'"),
        ({"rows": []}, "rows"),
        ({"rows": [{"name": "a", "overrides": ["seed=3"]}]}, "rows[0] (a).overrides[0]"),
        ({"rows": [{"name": "a", "runnable": False}]}, "rows[0] (a).reason"),
        ({"rows": [{"name": "a", "paper": {"bleu": 1.0}}]}, "rows[0] (a).paper.bleu"),
        ({"metrics": ["mauve", "perplexity"]}, "metrics"),
        ({"common": ["autoencoder.mask_prob=1.5"]}, "autoencoder.mask_prob"),
        ({"evaluation": {"num_sample": 4}}, "evaluation.num_sample"),
    ],
)
def test_bad_spec_fails_before_training_naming_the_field(tmp_path, no_training, capsys, changes, named):
    spec = write_spec(tmp_path / "bad.yaml", **changes)
    assert ablate(spec, tmp_path) == 2
    err = capsys.readouterr().err
    assert "ldlm ablate: error:" in err and named in err and str(spec) in err
    assert not (tmp_path / "runs").exists()


def test_bad_row_override_names_the_row(tmp_path):
    rows = [{"name": "good"}, {"name": "typo", "overrides": ["diffusion.layerz=2"]}]
    with pytest.raises(AblationSpecError, match=r"row 'typo': unknown key 'diffusion.layerz'"):
        load_spec(write_spec(tmp_path / "spec.yaml", rows=rows))


def test_a_result_from_another_spec_is_stale(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"key": {"base": "tiny"}, "metrics": {}}))
    assert read_result(path, {"base": "tiny"}) is not None
    assert read_result(path, {"base": "quickstart"}) is None
    assert read_result(tmp_path / "missing.json", {}) is None


def test_ordering_agreement_counts_pairs_ordered_as_in_the_paper():
    one = [summarize([v]) for v in (1.0, 2.0, 3.0)]
    assert ordering_agreement(one, [10.0, 30.0, 20.0]) == {
        "agree": 2,
        "pairs": 3,
        "resolved_agree": 0,
        "resolved_pairs": 0,
        "alpha": 0.05,
    }  # one seed per row: no pair is resolved
    missing = [summarize([1.0]), summarize([None]), summarize([3.0])]
    assert ordering_agreement(missing, [10.0, 5.0, None])["pairs"] == 0


def test_ordering_agreement_resolves_only_pairs_that_seeds_separate():
    """Rows a < b < c by mean. a and c are far apart over tight seeds (Welch p << 0.05); b overlaps both."""
    rows = [summarize([1.0, 1.1, 0.9]), summarize([2.0, 0.5, 3.5]), summarize([3.0, 3.1, 2.9])]
    from scipy.stats import ttest_ind

    assert ttest_ind([1.0, 1.1, 0.9], [3.0, 3.1, 2.9], equal_var=False).pvalue < 0.001
    assert ttest_ind([1.0, 1.1, 0.9], [2.0, 0.5, 3.5], equal_var=False).pvalue > 0.05
    agreed = ordering_agreement(rows, [10.0, 20.0, 30.0])
    assert agreed == {"agree": 3, "pairs": 3, "resolved_agree": 1, "resolved_pairs": 1, "alpha": 0.05}
    reversed_paper = ordering_agreement(rows, [30.0, 20.0, 10.0])
    assert reversed_paper["agree"] == 0 and (reversed_paper["resolved_agree"], reversed_paper["resolved_pairs"]) == (
        0,
        1,
    )
    identical = [summarize([1.0, 1.0]), summarize([2.0, 2.0])]  # deterministic reruns: no spread, no test
    assert ordering_agreement(identical, [1.0, 2.0])["resolved_pairs"] == 0


def test_markdown_states_the_resolved_pairs_only_when_there_are_some(table):
    _, _, agg = table
    label = agg["labels"]["mauve"]
    order = {"agree": 2, "pairs": 3, "resolved_agree": 1, "resolved_pairs": 1, "alpha": 0.05}
    text = markdown_table({**agg, "ordering_vs_paper": {"mauve": order}}, "t.json")
    assert f"ordered as in the paper: {label} 2/3." in text
    welch = "differ at p < 0.05 (Welch's t-test over training seeds, uncorrected for multiple pairs)"
    assert f"{welch}, ordered as in the paper: {label} 1/1." in text
    unresolved = markdown_table({**agg, "ordering_vs_paper": {"mauve": {**order, "resolved_pairs": 0}}}, "t.json")
    assert f"{label} 2/3." in unresolved and "Welch" not in unresolved


def test_rows_that_sampled_differently_say_so_in_their_notes(table):
    _, _, agg = table
    (base, no_mse) = (row for row in agg["rows"] if row["seeds"])
    assert base["sampling"] == [f"3 {agg['protocol']['sampler']}"]  # the spec's evaluation steps, the preset's sampler
    assert "sampled:" not in markdown_table(agg, "t.json")  # all alike: the protocol line says it once
    mixed = {**agg, "rows": [{**base, "sampling": ["200 euler_maruyama"]}, no_mse, *agg["rows"][2:]]}
    lines = markdown_table(mixed, "t.json").splitlines()
    assert "sampled: 200 euler_maruyama steps" in next(line for line in lines if line.startswith("| all losses |"))
    other = next(line for line in lines if line.startswith(f"| {no_mse['label']} |"))
    assert f"sampled: 3 {agg['protocol']['sampler']} steps" in other
    assert any("did not all sample alike" in line for line in lines)


@pytest.mark.parametrize("table_name", sorted(p.stem for p in ABLATION_DIR.glob("*.yaml")))
def test_shipped_specs_load_and_mark_unrunnable_rows(table_name):
    spec = load_spec(table_name)  # every runnable row's config is built and its encoder checked
    assert spec.name == table_name and len(spec.seeds) >= 3
    assert all(r.reason for r in spec.rows if not r.runnable)


def test_a_cell_says_when_fewer_runs_than_the_rows_seeds_report_the_figure():
    from ldlm.apps.ablation.table import _cell

    two_of_three = summarize([0.62, None, 0.64])  # e.g. a run older than the metric
    assert two_of_three["n"] == 2
    assert _cell(two_of_three, None, 1.0, runs=3) == "0.630 ± 0.014 [2 of 3]"
    assert _cell(summarize([0.62, 0.64]), 0.5, 1.0, runs=2) == "0.630 ± 0.014 (0.5)"


def test_seeds_cell_says_where_each_seed_trained():
    from ldlm.apps.ablation.table import _seeds_cell

    mixed = {"seeds": [0, 1, 2], "hardware": {"0": "cpu", "1": "NVIDIA H200", "2": "NVIDIA H200"}}
    assert _seeds_cell(mixed) == "0 (cpu); 1,2 (NVIDIA H200)"
    assert _seeds_cell({"seeds": [0, 1], "hardware": {"0": "cpu", "1": "cpu"}}) == "0,1"
    assert _seeds_cell({"seeds": [], "hardware": {}}) == "—"


def test_modes_exclude_each_other(tmp_path, no_training, capsys):
    spec = write_spec(tmp_path / "tiny_table.yaml")
    with pytest.raises(SystemExit) as err:
        ablate(spec, tmp_path, "--report-only", "--generate-only")
    assert err.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def _shared_spec(root: Path, monkeypatch, **changes) -> Path:
    """A second table whose one row is tiny_table's `base` row (`same_as`), both found by name in ``root``."""
    monkeypatch.setattr("ldlm.apps.ablation.spec.ABLATION_DIR", root)
    shared = {"name": "shared", "same_as": "tiny_table/base", "paper": {"mauve": 0.4}}
    metrics = ["judge_ppl", "mauve", "mismatch", "heldout_head_accuracy_true_h"]  # the last: not in tiny_table
    spec = {**SPEC, "name": "tiny_shared", "metrics": metrics, "paper_reference": {}}
    spec["rows"] = [{**shared, **changes}]
    path = root / "tiny_shared.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_a_same_as_row_takes_the_other_tables_runs_without_training(table, no_training, monkeypatch, capsys):
    root, _, _ = table
    spec = _shared_spec(root, monkeypatch)
    assert ablate(spec, root) == 0
    assert capsys.readouterr().out.count("taken from tiny_table's measured run") == 2
    for seed in (0, 1):
        source = json.loads((root / "results" / "tiny_table" / f"base-seed{seed}.json").read_text())
        mine = json.loads((root / "results" / "tiny_shared" / f"shared-seed{seed}.json").read_text())
        assert mine["metrics"] == {
            **{m: source["metrics"][m] for m in ("judge_ppl", "mauve", "mismatch")},
            "heldout_head_accuracy_true_h": source["summary"]["heldout_head_accuracy_true_h"],  # any run's summary
        }
        assert 0 < mine["metrics"]["heldout_head_accuracy_true_h"] <= 1
        assert mine["samples"] == source["samples"] and set(mine["probes"]) == {"mismatch"}
        assert mine["shared_from"] == str(root / "results" / "tiny_table" / f"base-seed{seed}.json")
        assert f"output_dir={root / 'runs' / 'tiny_table' / 'base' / f'seed{seed}'}" in mine["train_command"]
    agg = json.loads((root / "results" / "tiny_shared.json").read_text())
    assert agg["rows"][0]["seeds"] == [0, 1]
    assert "runs shared with `tiny_table/base`" in (root / "doc.md").read_text()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"overrides": ["autoencoder.mse_weight=0"]}, "its config differs"),
        ({"same_as": "tiny_table/no_such_row"}, "has no row 'no_such_row'"),
        ({"same_as": "tiny_table/impossible"}, "must be runnable"),
        ({"same_as": "base"}, "use 'TABLE/ROW'"),
    ],
)
def test_a_same_as_row_must_be_the_same_config(tmp_path, monkeypatch, changes, message):
    write_spec(tmp_path / "tiny_table.yaml")
    with pytest.raises(AblationSpecError, match=message):
        load_spec(_shared_spec(tmp_path, monkeypatch, **changes))


def test_a_same_as_row_needs_figures_the_other_table_measures(tmp_path, monkeypatch):
    write_spec(tmp_path / "tiny_table.yaml", metrics=["judge_ppl", "mauve"])
    with pytest.raises(AblationSpecError, match="tiny_table does not measure mismatch"):
        load_spec(_shared_spec(tmp_path, monkeypatch))
    write_spec(tmp_path / "tiny_table.yaml", evaluation={**SPEC["evaluation"], "num_samples": 8})
    with pytest.raises(AblationSpecError, match="evaluation differs"):
        load_spec(_shared_spec(tmp_path, monkeypatch))


def test_a_bumped_revision_makes_a_rows_old_runs_stale(table, tmp_path):
    """``revision`` (table or row) enters the run key: old per-run JSONs stop matching; at 0 the key is unchanged."""
    from ldlm.apps.ablation.run import run_key

    root, _, _ = table
    old = root / "results" / "tiny_table" / "base-seed0.json"
    spec = load_spec(write_spec(tmp_path / "tiny_table.yaml"))
    assert "revision" not in run_key(spec, spec.row("base"))
    assert read_result(old, run_key(spec, spec.row("base"))) is not None
    rows = [{**SPEC["rows"][0], "revision": 1}, *SPEC["rows"][1:]]
    bumped = load_spec(write_spec(tmp_path / "tiny_table.yaml", rows=rows))
    assert read_result(old, run_key(bumped, bumped.row("base"))) is None
    assert read_result(root / "results" / "tiny_table" / "no_mse-seed0.json", run_key(bumped, bumped.row("no_mse")))
    whole = load_spec(write_spec(tmp_path / "tiny_table.yaml", revision=2))
    assert (
        read_result(root / "results" / "tiny_table" / "no_mse-seed0.json", run_key(whole, whole.row("no_mse"))) is None
    )
    with pytest.raises(AblationSpecError, match="revision"):
        load_spec(write_spec(tmp_path / "tiny_table.yaml", revision=-1))
