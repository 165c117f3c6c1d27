"""Hub ids, model cards, push and datasets by name - all offline.

A saved tiny model is placed in a Hugging Face cache laid out as the hub client leaves it
(``models--owner--name/snapshots/<commit>/``, ``refs/main``) and loaded by id with ``HF_HUB_OFFLINE=1``; the push
is checked by the operations it would commit, with ``HfApi`` replaced, so no network is touched.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from huggingface_hub import ModelCard
from test_evaluation_suite import HELDOUT, TRAIN, FakeJudge, FakeModel

from ldlm import cli
from ldlm.config import load_config
from ldlm.data import DatasetError, load_texts
from ldlm.data.streaming import stream_texts
from ldlm.pipeline import LatentDiffusionLM, load_model
from ldlm.storage import hub
from ldlm.storage.model_card import read_evaluations

REPO = "someone/tiny-cosmos"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
SUMMARY = {
    "name": "tiny",
    "train_texts": 224,
    "valid_texts": 32,
    "heldout_token_accuracy": 0.4321,
    "train_minutes": 0.5,
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A run directory: ``summary.json`` and ``model/`` saved by save_pretrained (untrained weights: fast)."""
    run = tmp_path_factory.mktemp("hub_run")
    (run / "summary.json").write_text(json.dumps(SUMMARY))
    torch.manual_seed(0)
    model = LatentDiffusionLM(load_config("tiny"))
    model.save_pretrained(run / "model")
    return run


@pytest.fixture
def hub_cache(saved, tmp_path, monkeypatch):
    """``saved`` as the hub client caches ``REPO``; HF_HUB_CACHE points there and the hub is offline."""
    cache = tmp_path / "hf_cache"
    repo = cache / f"models--{REPO.replace('/', '--')}"
    shutil.copytree(saved / "model", repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return repo / "snapshots" / COMMIT


def test_load_by_hub_id_offline(hub_cache, saved):
    local = LatentDiffusionLM.from_pretrained(saved)
    model = LatentDiffusionLM.from_pretrained(REPO, revision="main")
    for key, value in local.trained_state_dict().items():
        assert torch.equal(value, model.trained_state_dict()[key]), key
    assert type(load_model(REPO)) is LatentDiffusionLM
    assert model.generate(2, steps=2, seed=0) == local.generate(2, steps=2, seed=0)


def test_local_path_wins_and_missing_ids_say_why(hub_cache, saved, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(saved, tmp_path / "someone" / "tiny-cosmos")  # a local directory with the same name
    assert hub.resolve_pretrained(REPO).resolve() == tmp_path / "someone" / "tiny-cosmos"
    with pytest.raises(hub.HubError, match="HF_HUB_OFFLINE is set"):
        LatentDiffusionLM.from_pretrained("someone/not-cached")
    with pytest.raises(hub.HubError, match="not in the hub cache at revision 'v2'"):
        load_model("someone/not-cached", revision="v2")


def test_cli_samples_a_hub_id(hub_cache, capsys):
    assert cli.main(["sample", REPO, "-n", "2", "--steps", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line[:3] for line in lines] == ["[0]", "[1]"]
    assert cli.main(["sample", "someone/absent", "-n", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "HF_HUB_OFFLINE" in err[0]


# ---------------------------------------------------------------------------------------- model card


def test_card_metadata_and_run_figures(saved):
    card = ModelCard.load(saved / "model" / "README.md")
    data = card.data
    assert data.library_name == "ldlm" and data.license == "mit"
    assert data.base_model == "sentence-transformers/all-MiniLM-L6-v2"  # the frozen encoder, by name
    assert {"ldlm", "cosmos", "latent-diffusion"} <= set(data.tags)
    accuracy = [r for r in data.eval_results if r.metric_name == "heldout_token_accuracy"]
    assert accuracy and accuracy[0].metric_value == pytest.approx(0.4321)
    text = card.text
    assert "COSMOS" in text and "N = 4" in text and "L = 24" in text and "224 train texts" in text
    assert f"ldlm train {saved}/config.json" in text  # the command that reproduces the training figure


def test_evaluate_updates_the_card(saved, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(saved, run)
    FakeJudge.instances = []
    monkeypatch.setattr("ldlm.evaluation.suite.ScoringJudge", FakeJudge)
    monkeypatch.setattr(cli, "_load_for_evaluation", lambda args: (FakeModel(), TRAIN, HELDOUT))
    out = tmp_path / "results" / "tiny_report.json"
    assert cli.main(["evaluate", str(run), "-n", "4", "--seeds", "0,1", "--out", str(out)]) == 0
    assert "updated the model card" in capsys.readouterr().err
    record = read_evaluations(run / "model")["unconditional"]
    assert record["report"] == str(out) and record["command"].startswith("ldlm evaluate {model} -n 4 --seeds 0,1")
    card = ModelCard.load(run / "model" / "README.md")
    names = {r.metric_name for r in card.data.eval_results}
    assert {"heldout_token_accuracy", "judge_ppl", "mauve", "entropy"} <= names
    assert f"ldlm evaluate {run} -n 4 --seeds 0,1" in card.text


# ---------------------------------------------------------------------------------------- push


def test_push_builds_one_commit(saved, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(saved, run)
    report = tmp_path / "tiny_report.json"
    report.write_text("{}")
    (run / "model" / "eval_results.json").write_text(
        json.dumps(
            {"unconditional": {"figures": {"mauve": 0.5}, "command": "ldlm evaluate {model}", "report": str(report)}}
        )
    )
    plan = hub.push_operations(run, REPO)
    paths = sorted(op.path_in_repo for op in plan.operations())
    expected = ["README.md", "config.json", "eval_results.json", "model.safetensors", "results/tiny_report.json"]
    assert paths == sorted([*expected, "summary.json"])
    assert f"ldlm evaluate {REPO}" in plan.card and f'load_model("{REPO}")' in plan.card

    calls = []
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: "hf_fake")
    monkeypatch.setattr("huggingface_hub.HfApi.create_repo", lambda self, repo_id, **kw: calls.append(("repo", kw)))
    monkeypatch.setattr(
        "huggingface_hub.HfApi.create_commit",
        lambda self, repo_id, operations, **kw: (
            calls.append(("commit", [o.path_in_repo for o in operations]))
            or type("Info", (), {"commit_url": f"https://hf.co/{repo_id}/commit/1"})()
        ),
    )
    assert cli.main(["push", str(run), "--repo", REPO, "--private"]) == 0
    assert calls[0] == ("repo", {"private": True, "exist_ok": True, "token": "hf_fake"})
    assert [c[0] for c in calls] == ["repo", "commit"] and sorted(calls[1][1]) == paths  # exactly one commit
    assert "one commit" in capsys.readouterr().out


@pytest.mark.parametrize("offline", [True, False])
def test_push_fails_cleanly_offline_or_without_token(saved, monkeypatch, capsys, offline):
    def no_network(*args, **kwargs):
        raise AssertionError("the network was touched")

    monkeypatch.setattr("huggingface_hub.HfApi.create_repo", no_network)
    monkeypatch.setattr("huggingface_hub.HfApi.create_commit", no_network)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert cli.main(["push", str(saved), "--repo", REPO]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ldlm push: error: ")
    assert ("HF_HUB_OFFLINE" if offline else "no Hugging Face token") in err[0]


# ---------------------------------------------------------------------------------------- datasets by name

STORIES = [
    f"story {i}: the {w} went to the {p} and found a {t}."
    for i, (w, p, t) in enumerate(
        (w, p, t)
        for w in ("cat", "dog", "girl", "boy", "king")
        for p in ("park", "sea", "town", "hill")
        for t in ("key", "box", "map", "hat")
    )
]


def test_local_datasets_formats_and_errors(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"story": STORIES[:10], "id": list(range(10))})
    ds.save_to_disk(str(tmp_path / "saved"))
    ds.to_parquet(str(tmp_path / "stories.parquet"))
    assert load_texts(str(tmp_path / "saved"), field="story") == STORIES[:10]
    assert load_texts(str(tmp_path / "stories.parquet"), field="story", max_texts=3, seed=1) == load_texts(
        str(tmp_path / "saved"), field="story", max_texts=3, seed=1
    )
    assert list(stream_texts(str(tmp_path / "saved"), field="story")) == STORIES[:10]
    with pytest.raises(DatasetError, match=r"columns: story, id\): set data.text_field"):
        load_texts(str(tmp_path / "saved"))
    with pytest.raises(DatasetError, match="HF_HUB_OFFLINE"):
        load_texts("hub:roneneldan/TinyStories")
    with pytest.raises(DatasetError, match="HF_HUB_OFFLINE"):
        next(stream_texts("hub:roneneldan/TinyStories"))


@pytest.mark.slow
def test_saved_dataset_trains_tiny(tmp_path, capsys):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"story": STORIES}).save_to_disk(str(tmp_path / "ds"))
    overrides = [
        f"data.dataset={tmp_path / 'ds'}", "data.text_field=story", "data.validation_size=16",
        "data.cache_features=false", "encoder.stats_texts=32", "autoencoder_train.steps=2",
        "diffusion_train.steps=2", "autoencoder_train.eval_every=2", "diffusion_train.eval_every=2",
        f"output_dir={tmp_path}/{{name}}",
    ]  # fmt: skip
    assert cli.main(["train", "tiny", *overrides, "--quiet"]) == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "tiny" / "summary.json").read_text())
    assert summary["train_texts"] == len(STORIES) - 16
    card = ModelCard.load(tmp_path / "tiny" / "model" / "README.md")
    assert "heldout_token_accuracy" in {r.metric_name for r in card.data.eval_results}  # summary written first
