"""The multi-seed suite, its report files and the `ldlm evaluate` / `ldlm sweep` commands, on fast fakes.

The judge and the model are replaced by deterministic stand-ins (the real judge is tested in
test_evaluation_mauve.py and test_judge.py), so these tests check the bookkeeping: seeds, mean ± std,
disjoint reference sets, undefined metrics reported as null, the files written and the CLI errors.
"""

from __future__ import annotations

import json
import math
import shlex
import statistics
import zlib
from types import SimpleNamespace

import numpy as np
import pytest

from ldlm import cli
from ldlm.evaluation import suite
from ldlm.evaluation.suite import SuiteConfig, evaluate_model, split_reference, summarize
from ldlm.reporting.writer import reproduce_command, write_report

HELDOUT = [f"Real Sentence {i} about topic {i % 7} and more words here" for i in range(40)]
TRAIN = [f"training text {i} alpha beta gamma delta" for i in range(30)]


class FakeJudge:
    """PPL from word counts; features: a per-text Gaussian draw, shifted for generated texts (MAUVE < 1)."""

    instances: list[FakeJudge] = []

    def __init__(self, name, *, pooling, device, batch_size, max_length):
        self.name, self.max_length, self.featurised = name, max_length, []
        FakeJudge.instances.append(self)

    def perplexity(self, texts):
        scored = [t for t in texts if t.strip()]
        if not scored:
            raise ValueError("all texts are empty")
        words = [len(t.split()) for t in scored]
        return {
            "token_ppl": 10.0 + statistics.fmean(words),
            "sample_ppl_mean": 20.0 + max(words),
            "num_dropped": len(texts) - len(scored),
        }

    def features(self, texts):
        self.featurised.append(list(texts))
        rows = [np.random.default_rng(zlib.crc32(t.encode())).normal(size=8) for t in texts]
        return np.stack(rows) + np.array([[3.0 * t.startswith("gen")] for t in texts])  # (n, 8)


class FakeModel:
    """generate(n, seed) -> deterministic texts; the tokenizer round trip lowercases, as MiniLM's does."""

    def __init__(self, words_per_text: int = 6):
        self.words = words_per_text
        self.max_length = 32
        self.cfg = SimpleNamespace(name="fake", run_dir="runs/fake", sample=SimpleNamespace(steps=7, sampler="euler"))
        self.calls = []

    def generate(self, n, *, steps=None, sampler=None, seed=None, batch_size=None):
        self.calls.append({"n": n, "steps": steps, "seed": seed, "sampler": sampler})
        base = "gen alpha beta gamma delta x y z".split()
        return [" ".join([*base[: self.words - 1], f"s{seed}i{i}"][: self.words]) for i in range(n)]

    def tokenize(self, texts):
        return list(texts), None

    def ids_to_texts(self, ids):
        return [t.lower() for t in ids]


@pytest.fixture
def fake_judge(monkeypatch):
    FakeJudge.instances = []
    monkeypatch.setattr(suite, "ScoringJudge", FakeJudge)
    return FakeJudge


def test_summarize_by_hand():
    s = summarize([1.0, 2.0, None, 4.0])
    assert s["mean"] == pytest.approx(7 / 3) and s["std"] == pytest.approx(math.sqrt(7 / 3)) and s["n"] == 3
    assert s["values"] == [1.0, 2.0, None, 4.0]
    assert summarize([5.0]) == {"mean": 5.0, "std": 0.0, "n": 1, "values": [5.0]}
    assert summarize([None, None])["mean"] is None


def test_split_reference_is_disjoint_deterministic_and_sized():
    texts = [*HELDOUT, HELDOUT[0], "  "]  # a duplicate and an empty text are dropped
    ref, pool = split_reference(texts, 10, seed=0)
    assert len(ref) == 10 and len(pool) == 30 and not set(ref) & set(pool)
    assert (ref, pool) == split_reference(texts, 10, seed=0)
    assert ref != split_reference(texts, 10, seed=1)[0]
    with pytest.raises(ValueError, match="2 x num_samples = 42"):
        split_reference(texts, 21)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_samples": 1}, "num_samples"),
        ({"seeds": ()}, "seeds is empty"),
        ({"seeds": (1, 1)}, "repeat"),
        ({"steps": 0}, "steps"),
        ({"sampler": "heun"}, "sampler='heun' is unknown"),
    ],
)
def test_suite_config_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SuiteConfig(**kwargs)


def test_evaluate_model_rows_seeds_and_protocol(fake_judge):
    model = FakeModel()
    cfg = SuiteConfig(num_samples=8, seeds=(0, 1, 2))
    report = evaluate_model(model, TRAIN, HELDOUT, cfg)
    assert [c["seed"] for c in model.calls] == [0, 1, 2] and all(c["n"] == 8 for c in model.calls)
    judge = fake_judge.instances[0]
    mauve_ref = judge.featurised[0]  # the MAUVE reference is featurised first, once
    assert len(mauve_ref) == 8 and all(t == t.lower() for t in mauve_ref)  # tokenizer round trip applied
    for row in report["per_seed"]:
        assert not set(row["reference_samples"]) & set(mauve_ref)  # real text never scored against itself
    for row in ("model", "reference"):
        for metric in ("judge_ppl", "mauve", "div", "entropy", "mem"):
            values = [r[row][metric] for r in report["per_seed"]]
            assert report[row][metric]["mean"] == pytest.approx(statistics.fmean(values))
            assert report[row][metric]["std"] == pytest.approx(statistics.stdev(values))
    assert report["model"]["judge_ppl"]["mean"] == pytest.approx(16.0)  # 10 + 6 words per text
    assert report["model"]["mauve"]["mean"] < report["reference"]["mauve"]["mean"]  # shifted features
    assert report["model"]["mem"]["mean"] > 0  # "alpha beta gamma delta" is a training 4-gram
    p = report["protocol"]
    assert (p["judge"], p["num_samples"], p["seeds"], p["mauve_max_len"]) == ("smollm2-135m", 8, [0, 1, 2], 256)
    assert p["sampling_steps"] == 7 and p["mauve_reference_texts"] == 8
    assert evaluate_model(FakeModel(), TRAIN, HELDOUT, cfg)["model"] == report["model"]  # reproducible


def test_undefined_metrics_are_null_with_a_warning_never_nan(fake_judge, tmp_path):
    report = evaluate_model(FakeModel(words_per_text=1), TRAIN, HELDOUT, SuiteConfig(num_samples=4, seeds=(0, 1)))
    assert report["model"]["div"] == {"mean": None, "std": None, "n": 0, "values": [None, None]}
    assert report["model"]["mem"]["mean"] is None and report["model"]["entropy"]["mean"] == 0.0
    assert any("seed 0, model: div: no 2-grams" in w for w in report["warnings"])
    paths = write_report(report, tmp_path / "r.json")
    json.loads(paths["json"].read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the report"))
    assert "| model | " in paths["md"].read_text() and "n/a" in paths["md"].read_text()


def test_write_report_files(fake_judge, tmp_path):
    report = evaluate_model(FakeModel(), TRAIN, HELDOUT, SuiteConfig(num_samples=4, seeds=(0, 1)))
    paths = write_report(report, tmp_path / "out" / "x_report.json")
    assert {p.name for p in paths.values()} == {"x_report.json", "x_report.md", "x_report.png"}
    saved = json.loads(paths["json"].read_text())
    for row in ("model", "reference"):
        assert all({"mean", "std"} <= saved[row][m].keys() for m in ("judge_ppl", "mauve", "div", "entropy", "mem"))
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    assert "![metrics](x_report.png)" in paths["md"].read_text()


@pytest.fixture
def fake_run(monkeypatch, fake_judge):
    model = FakeModel()
    monkeypatch.setattr(cli, "_load_for_evaluation", lambda args: (model, TRAIN, HELDOUT))
    return model


def test_evaluate_command(fake_run, tmp_path, capsys):
    out = tmp_path / "q_report.json"
    rc = cli.main(["evaluate", "runs/fake", "-n", "4", "--seeds", "3,4", "--steps", "5", "--out", str(out)])
    assert rc == 0
    assert [c["seed"] for c in fake_run.calls] == [3, 4] and fake_run.calls[0]["steps"] == 5
    report = json.loads(out.read_text())
    assert report["protocol"]["seeds"] == [3, 4] and out.with_suffix(".png").is_file()
    assert capsys.readouterr().out.startswith("model     judge_ppl")


def test_evaluate_command_paper_scale_needs_enough_heldout_texts(fake_run, capsys):
    assert cli.main(["evaluate", "runs/fake", "--paper"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ldlm evaluate: error: ") and "2 x num_samples = 2000" in err[0]


def test_evaluate_command_usage_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["evaluate", "runs/fake", "--seeds", "a,b"])
    assert exc.value.code == 2 and "comma-separated integers" in capsys.readouterr().err
    assert cli.main(["evaluate", "runs/fake", "--mauve-pooling", "max"]) == 2
    assert "pooling='max' is unknown" in capsys.readouterr().err


def test_sweep_command(fake_run, tmp_path):
    out = tmp_path / "sweep.json"
    assert cli.main(["sweep", "runs/fake", "-n", "4", "--steps-list", "20,5", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["steps"] for r in result["rows"]] == [5, 20] and [c["steps"] for c in fake_run.calls] == [5, 20]
    assert result["rows"][0]["judge_ppl"]["mean"] == pytest.approx(16.0)
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert "sampler" not in result["rows"][0] and result["protocol"]["sampler"] == "euler"  # the single-sampler form


def test_sweep_command_compares_samplers(fake_run, tmp_path, capsys, monkeypatch):
    from ldlm.evaluation import sweep

    plotted = []
    monkeypatch.setattr(sweep, "plot_curves", lambda out, panels, **kw: plotted.append(panels) or out)
    out = tmp_path / "fewstep.json"
    argv = ["sweep", "runs/fake", "-n", "4", "--seeds", "0,1", "--steps-list", "16,8", "--out", str(out)]
    assert cli.main([*argv, "--samplers", "euler,ddim,dpmpp_2m"]) == 0
    result = json.loads(out.read_text())
    assert [(r["sampler"], r["steps"]) for r in result["rows"]] == [
        (s, n) for s in ("euler", "ddim", "dpmpp_2m") for n in (8, 16)
    ]
    assert [(c["sampler"], c["steps"], c["seed"]) for c in fake_run.calls] == [
        (s, n, seed) for s in ("euler", "ddim", "dpmpp_2m") for n in (8, 16) for seed in (0, 1)
    ]
    row = result["rows"][-1]
    assert row["judge_ppl"]["n"] == 2 and row["seconds_per_sample"] >= 0 and {"entropy", "mauve"} <= set(row)
    assert result["protocol"]["samplers"] == ["euler", "ddim", "dpmpp_2m"] and "sampler" not in result["protocol"]
    # one PNG: every panel (judge PPL, entropy, MAUVE, s/sample) has a line per sampler against the model calls
    assert len(plotted) == 1 and [name for name, _, _ in plotted[0]][2:] == ["MAUVE", "generation time"]
    for _, _, series in plotted[0]:
        assert list(series) == ["euler", "ddim", "dpmpp_2m"] and all(xs == [8, 16] for xs, _ in series.values())
    assert "dpmpp_2m steps    16:" in capsys.readouterr().out


def test_sweep_command_writes_one_png_with_a_line_per_sampler(fake_run, tmp_path):
    out = tmp_path / "fewstep.json"
    assert (
        cli.main(["sweep", "runs/fake", "-n", "4", "--steps-list", "4", "--samplers", "euler,ddim", "--out", str(out)])
        == 0
    )
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--samplers", "euler,heun"], "--samplers euler,heun"),
        (["--samplers", "euler,euler"], "at most once"),
        (["--samplers", "euler,ddim", "--sampler", "ddim"], "not both"),
    ],
)
def test_sweep_command_rejects_bad_sampler_lists(fake_run, capsys, extra, message):
    assert cli.main(["sweep", "runs/fake", "-n", "4", "--steps-list", "4", *extra]) == 2
    assert message in capsys.readouterr().err and not fake_run.calls


def test_reproduce_command_parses_back_to_the_same_settings(fake_judge):
    from ldlm.evaluation.mauve import MauveProtocol

    cfg = SuiteConfig(num_samples=4, seeds=(2, 5), steps=9, sampler="ddim", mauve=MauveProtocol(max_len=64, seed=3))
    report = evaluate_model(FakeModel(), TRAIN, HELDOUT, cfg)
    command = reproduce_command(report, "results/x.json")
    env, prog, *argv = shlex.split(command)
    assert (env, prog) == ("HF_HUB_OFFLINE=1", "ldlm")
    args = cli.build_parser().parse_args(argv)
    assert cli._suite_config(args) == cfg and args.out == "results/x.json" and args.run_dir == "runs/fake"


def _row(entropy, div):
    return {"entropy": {"mean": entropy}, "div": {"mean": div}}


def test_collapse_check_flags_repetition_not_healthy_samples():
    real = _row(3.03, 0.81)
    healthy = suite.collapse_check(_row(2.97, 0.84), real)
    assert not healthy["collapsed"] and healthy["entropy_ratio"] == pytest.approx(2.97 / 3.03)
    assert suite.collapse_check(_row(0.93, 0.009), real)["collapsed"]  # "her her her she she she"
    assert suite.collapse_check(_row(2.9, 0.2), real)["collapsed"]  # varied words, repeated phrases
    assert suite.collapse_check(_row(2.5, 0.8), real)["collapsed"]  # entropy 0.83x
    assert not suite.collapse_check(_row(None, None), real)["collapsed"]  # undefined metrics: no verdict


def test_evaluate_report_carries_the_collapse_verdict(fake_judge):
    report = evaluate_model(FakeModel(), TRAIN, HELDOUT, SuiteConfig(num_samples=4, seeds=(0, 1)))
    assert set(report["collapse"]) >= {"collapsed", "entropy_ratio", "div_ratio"}
    assert report["collapse"]["collapsed"] == any("collapsed" in w for w in report["warnings"])


def test_compare_command_builds_one_table_and_refuses_differing_protocols(fake_judge, tmp_path, capsys):
    from ldlm.evaluation.compare import compare_reports

    cfg = SuiteConfig(num_samples=4, seeds=(0, 1))
    a = evaluate_model(FakeModel(words_per_text=6), TRAIN, HELDOUT, cfg)
    b = evaluate_model(FakeModel(words_per_text=9), TRAIN, HELDOUT, cfg)
    a["training"] = {"train_minutes": 75.0}
    paths = {}
    for name, rep in (("cosmos", a), ("ar", b)):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(rep))
    out = tmp_path / "cmp.json"
    assert cli.main(["compare", f"cosmos={paths['cosmos']}", f"ar={paths['ar']}", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert list(result["rows"]) == ["cosmos", "ar", "reference"]
    assert result["rows"]["cosmos"]["judge_ppl"] == {k: a["model"]["judge_ppl"][k] for k in ("mean", "std", "n")}
    assert (
        result["rows"]["ar"]["judge_ppl"]["mean"] == b["model"]["judge_ppl"]["mean"] != a["model"]["judge_ppl"]["mean"]
    )
    assert result["rows"]["reference"]["entropy"]["mean"] == a["reference"]["entropy"]["mean"]
    assert result["rows"]["cosmos"]["train_minutes"] == 75.0 and result["rows"]["ar"]["train_minutes"] is None
    assert len(result["commands"]) == 2 and all("ldlm evaluate" in c for c in result["commands"])
    other = evaluate_model(FakeModel(), TRAIN, HELDOUT, SuiteConfig(num_samples=4, seeds=(0, 2)))
    with pytest.raises(ValueError, match="seeds"):
        compare_reports({"cosmos": a, "x": other})
    assert cli.main(["compare", "cosmos", "--out", str(out)]) == 2
    assert "NAME=PATH" in capsys.readouterr().err


class RoundTripModel(FakeModel):
    """A FakeModel with a perfect autoencoder (encode/decode = the tokenizer round trip) that must never sample."""

    def encode(self, texts):
        return list(texts)

    def decode(self, latents):
        return self.ids_to_texts(latents)

    def generate(self, n, **kwargs):
        raise AssertionError("source='reconstruction' must not sample")


def test_reconstruction_source_of_a_perfect_autoencoder_scores_exactly_the_reference_row(fake_judge):
    cfg = SuiteConfig(num_samples=4, seeds=(0, 1), source="reconstruction")
    report = evaluate_model(RoundTripModel(), TRAIN, HELDOUT, cfg)
    mauve_ref = fake_judge.instances[0].featurised[0]
    for row in report["per_seed"]:
        assert row["samples"] == row["reference_samples"]  # the round trips of the reference row's own texts
        assert not set(row["samples"]) & set(mauve_ref)  # disjoint from the MAUVE reference
        assert row["model"] == row["reference"]
    assert report["model"]["judge_ppl"] == report["reference"]["judge_ppl"]
    p = report["protocol"]
    assert "reconstruction" in p["source"] and p["sampler"] is None and p["sampling_steps"] is None
    assert "--source reconstruction" in reproduce_command(report)
    env, prog, *argv = shlex.split(reproduce_command(report))
    assert cli._suite_config(cli.build_parser().parse_args(argv)) == cfg


def test_reconstruction_source_evaluates_the_decoded_heldout_texts_of_a_tiny_model(fake_judge, monkeypatch):
    from ldlm_helpers import tiny_model

    from ldlm.config import load_config

    model = tiny_model(load_config("tiny")).eval()
    monkeypatch.setattr(model, "generate", lambda *a, **k: pytest.fail("source='reconstruction' sampled"))
    heldout = [f"{t}, and then story number {i} went on for a while longer than before" for i, t in enumerate(HELDOUT)]
    raw = dict(zip(suite.model_texts(model, heldout), heldout, strict=True))
    report = evaluate_model(model, TRAIN, heldout, SuiteConfig(num_samples=4, seeds=(0, 1), source="reconstruction"))
    judge = fake_judge.instances[0]
    for i, row in enumerate(report["per_seed"]):
        originals = [raw[t] for t in row["reference_samples"]]
        decoded = model.decode(model.encode(originals))  # text -> E_h -> E_z -> z -> D_h -> D_w -> text
        assert row["samples"] == decoded and decoded != row["reference_samples"]  # untrained: not the input back
        assert judge.featurised[1 + 2 * i] == decoded  # these texts were scored as the model row
    assert report["model"]["judge_ppl"]["values"] != report["reference"]["judge_ppl"]["values"]


def test_evaluate_command_reconstruction_source(monkeypatch, fake_judge, tmp_path):
    model = RoundTripModel()
    monkeypatch.setattr(cli, "_load_for_evaluation", lambda args: (model, TRAIN, HELDOUT))
    out = tmp_path / "r.json"
    assert cli.main(["evaluate", "runs/fake", "-n", "4", "--source", "reconstruction", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["source"] == "reconstruction" and "round trips" in out.with_suffix(".md").read_text()
    assert report["model"]["mauve"] == report["reference"]["mauve"]
