"""The autoregressive baseline (``recipe: ar``, issue 21 item 5): causal mask, padding-masked loss, training through
the CLI, save/load, nucleus sampling, the generation cache, resume and the `ldlm sample` / `ldlm evaluate` path."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from test_evaluation_suite import FakeJudge

from ldlm import cli
from ldlm.baselines.ar import ARLanguageModel, causal_bias, lm_loss, sample_next, top_p_filter
from ldlm.config import ConfigError, load_config
from ldlm.evaluation import suite
from ldlm.pipeline import LatentDiffusionLM, load_model
from ldlm.recipes.ar import ARTask, heldout_loss

TINY_AR = [
    "recipe=ar",
    "ar.layers=2",
    "ar.width=32",
    "ar.heads=4",
    "ar_train.steps=16",
    "ar_train.batch_size=16",
    "ar_train.lr=3e-3",
    "ar_train.warmup_steps=2",
    "ar_train.ema_decay=0.5",
    "ar_train.ema_update_after=1",
    "ar_train.log_every=4",
    "ar_train.eval_every=16",
    "ar_train.eval_batches=1",
    "ar_train.save_every=8",
]


def tiny_ar_config(*overrides: str):
    return load_config("tiny", [*TINY_AR, *overrides])


@functools.cache
def _tokenizer():
    return ARLanguageModel(tiny_ar_config()).tokenizer


def tiny_ar(*overrides: str, seed: int = 0) -> ARLanguageModel:
    torch.manual_seed(seed)
    return ARLanguageModel(tiny_ar_config(*overrides), tokenizer=_tokenizer()).eval()


@pytest.fixture(scope="module")
def ar_run(tmp_path_factory):
    """`ldlm train tiny recipe=ar ...` through the CLI, once for this module."""
    root = tmp_path_factory.mktemp("ar_run")
    rc = cli.main(["train", "tiny", *TINY_AR, f"output_dir={root}/{{name}}", "--quiet"])
    assert rc == 0
    return root / "tiny"


def test_changing_token_j_leaves_earlier_logits_unchanged():
    model = tiny_ar()
    ids = torch.randint(1000, 2000, (2, 12), generator=torch.Generator().manual_seed(0))
    j = 7
    changed = ids.clone()
    changed[:, j] = 2500
    with torch.no_grad():
        a, b = model.net(ids), model.net(changed)
    assert torch.equal(a[:, :j], b[:, :j])  # nothing before j may see token j
    assert not torch.allclose(a[:, j:], b[:, j:])  # from j on it does
    assert causal_bias(3)[0, 0].isinf().tolist() == [[False, True, True], [False, False, True], [False, False, False]]


def test_padding_targets_are_masked_out_of_the_loss():
    model = tiny_ar()
    ids, mask = model.tokenize(["a short story.", "another one, a little longer than the first."])
    assert (mask == 0).any()
    scrambled = ids.masked_fill(mask == 0, 1234)  # other tokens at padding positions
    loss_a, info_a = lm_loss(model.net, ids, mask, model.start_id, model.prepend_start)
    loss_b, _ = lm_loss(model.net, scrambled, mask, model.start_id, model.prepend_start)
    assert torch.equal(loss_a, loss_b)
    assert info_a["tokens"] == int(mask[:, 1:].sum())  # BERT rows start with [CLS]: every real token after it


def test_training_through_the_cli_lowers_the_heldout_loss(ar_run):
    summary = json.loads((ar_run / "summary.json").read_text())
    trained = load_model(ar_run)
    untrained = tiny_ar()
    ids, mask = trained.tokenize(["the government said on monday that it would raise taxes."] * 4)
    before = heldout_loss(ARTask(untrained.net, untrained.start_id, untrained.prepend_start), ids, mask)["loss"]
    assert summary["val_loss"] < before - 1.0  # ln(30522) = 10.3 untrained
    assert summary["parameters"] == trained.num_parameters() and summary["train_minutes"] > 0
    assert sorted(p.name for p in (ar_run / "ar" / "checkpoints").iterdir()) == ["step_00000008"]


def test_save_load_round_trip_gives_identical_logits(ar_run, tmp_path):
    model = load_model(ar_run)
    assert isinstance(model, ARLanguageModel)
    model.save_pretrained(tmp_path / "copy")
    again = ARLanguageModel.from_pretrained(tmp_path / "copy")
    ids = torch.randint(1000, 2000, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model.net(ids), again.net(ids))
    assert model.generate(3, seed=5) == again.generate(3, seed=5)
    with pytest.raises(Exception, match="recipe='ar'"):
        LatentDiffusionLM.from_pretrained(ar_run)  # the diffusion loader refuses it; load_model dispatches


def test_top_p_never_draws_outside_the_nucleus():
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])  # sorted: 0.5, 0.3 | 0.15, 0.05
    logits = probs.log().repeat(20_000, 1)
    kept = top_p_filter(logits[:1], 0.7).isfinite()[0].tolist()
    assert kept == [False, True, False, True]  # smallest set reaching 0.7: {0.5, 0.3}
    assert top_p_filter(logits[:1], 0.5).isfinite()[0].tolist() == [False, True, False, False]
    draws = sample_next(logits, torch.Generator().manual_seed(0), temperature=1.0, top_p=0.7)[:, 0]
    counts = torch.bincount(draws, minlength=4).float() / draws.numel()
    assert counts[0] == 0 and counts[2] == 0
    assert counts[1].item() == pytest.approx(0.5 / 0.8, abs=0.015)  # renormalised inside the nucleus
    plain = sample_next(logits, torch.Generator().manual_seed(0), temperature=1.0, top_p=1.0)[:, 0]
    assert torch.bincount(plain, minlength=4).float().div(plain.numel())[0].item() == pytest.approx(0.05, abs=0.01)


def test_cached_generation_equals_full_recompute():
    model = tiny_ar(seed=3)
    ids = torch.randint(1000, 2000, (3, 9), generator=torch.Generator().manual_seed(2))
    cache: list[torch.Tensor] = []
    with torch.no_grad():
        stepped = torch.stack([model.net.step(ids[:, i : i + 1], cache) for i in range(ids.shape[1])], 1)
        torch.testing.assert_close(stepped, model.net(ids), rtol=1e-5, atol=1e-5)
    rows = {
        cached: model.generate_ids(4, generator=torch.Generator().manual_seed(7), top_p=0.9, use_cache=cached)
        for cached in (True, False)
    }
    assert torch.equal(rows[True], rows[False]) and rows[True].shape == (4, model.max_length)
    assert (rows[True][:, 0] == model.start_id).all()  # BERT rows start with [CLS]


def test_config_validation_for_the_ar_recipe():
    assert tiny_ar_config().recipe == "ar"
    with pytest.raises(ConfigError, match="ar.width"):
        tiny_ar_config("ar.heads=5")
    with pytest.raises(ConfigError, match="ar_train.steps"):
        tiny_ar_config("ar_train.steps=0")
    with pytest.raises(ConfigError, match="ar.top_p"):
        tiny_ar_config("ar.top_p=0")
    cfg = load_config("ar_roc45k")
    assert (cfg.encoder.name, cfg.encoder.max_length) == ("minilm-l6", 32)
    cosmos = load_config("cosmos_roc45k")
    assert cfg.data == cosmos.data  # the same texts as the COSMOS run it is compared with


def test_resume_restores_the_finished_stage(ar_run, capsys):
    before, summary = load_model(ar_run).net.state_dict(), json.loads((ar_run / "summary.json").read_text())
    capsys.readouterr()
    rc = cli.main(["train", "tiny", *TINY_AR, f"output_dir={ar_run.parent}/{{name}}", "--quiet", "--resume"])
    assert rc == 0
    after = load_model(ar_run).net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # restored from the stage snapshot, not retrained
    printed = capsys.readouterr().out
    assert json.loads(printed[printed.index("{") :]) == summary  # the stage's own minutes and loss, not a rerun's


def test_sample_and_evaluate_commands_load_the_ar_run(ar_run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "s.txt"
    assert cli.main(["sample", str(ar_run), "-n", "3", "--seed", "2", "--out", str(out)]) == 0
    assert out.read_text().splitlines() == load_model(ar_run).generate(3, seed=2)
    monkeypatch.setattr(suite, "ScoringJudge", FakeJudge)
    report = tmp_path / "r.json"
    assert cli.main(["evaluate", str(ar_run), "-n", "4", "--seeds", "0,1", "--out", str(report)]) == 0
    saved = json.loads(report.read_text())
    assert saved["model"]["entropy"]["n"] == 2 and saved["config"] == "tiny"
    assert saved["per_seed"][1]["samples"] == load_model(ar_run).generate(4, seed=1)  # the AR model's own texts
