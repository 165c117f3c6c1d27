"""``ldlm gpu-check --smoke`` on the CPU: the GPU check's JSON, its per-item failure isolation, the time budget,
the out-of-memory batch halving, and that every paper-sized item builds (on the meta device: no weights, no GPU)."""

from __future__ import annotations

import dataclasses
import json
import math
import time

import pytest
import torch

from ldlm.apps.bench import gpu_check
from ldlm.apps.bench.gpu_check import BENCH, CheckConfig, CheckItem, run_check
from ldlm.cli import build_parser, main


def _positive(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _check_training(entry: dict, c: CheckConfig) -> None:
    for key in ("step_seconds", "step_seconds_mean", "samples_per_s", "tokens_per_s", "warmup_seconds", "seconds"):
        assert _positive(entry[key]), (entry["name"], key)
    assert entry["steps"] == c.steps and entry["warmup_steps"] == c.warmup
    assert entry["step_seconds_min"] <= entry["step_seconds"] <= entry["step_seconds_max"]
    assert entry["batch_size"] == entry["preset_batch_size"] and entry["out_of_memory_batch_sizes"] == []
    assert _positive(entry["trainable_params"]) and all(_positive(v) for v in entry["params"].values())
    assert entry["peak_rss_gib"] is None or _positive(entry["peak_rss_gib"])
    assert entry["precision"] == "no" and entry["skipped_steps"] == 0


def test_smoke_cli_writes_sane_json(tmp_path, capsys):
    out = tmp_path / "gpu_check.json"
    start = time.perf_counter()
    assert main(["gpu-check", "--smoke", "--out", str(out)]) == 0
    assert time.perf_counter() - start < 60
    result = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == result
    c = CheckConfig.smoke_config()
    assert result["complete"] is True and result["config"]["smoke"] is True
    assert {"device", "torch", "cuda", "gpu_memory_gib"} <= set(result["machine"])
    names = [e["name"] for e in result["items"]]
    assert names == ["tiny_autoencoder_cached", "tiny_diffusion_compiled", "ldlm_tiny_joint_uncached", "bench"]
    assert all(e["status"] == "ok" for e in result["items"]), result["items"]
    training = [e for e in result["items"] if e["kind"] == "training"]
    for entry in training:
        _check_training(entry, c)
    assert [e["feature_cache"] for e in training] == [True, None, False]
    assert training[1]["compile"] is True and training[1]["compiled"] is False  # train.compile is GPU-only
    bench = result["items"][-1]
    assert bench["batch"] == c.bench.batch and bench["device"] == "cpu"
    rows = bench["sampling"]["rows"] + bench["step_cost"]
    assert rows and all(_positive(v) for row in rows for v in row.values())
    assert all(_positive(bench[f"latent_over_ar_time_L{n}"]) for n in c.bench.lengths)


def _small(**changes) -> CheckConfig:
    order = (CheckItem("tiny", "diffusion"), CheckItem("tiny", "autoencoder"), BENCH)
    return dataclasses.replace(CheckConfig.smoke_config(), order=order, **changes)


def test_one_failing_item_is_recorded_and_the_others_run(tmp_path):
    def measure(item, c, deadline, start_batch):
        if item.stage == "autoencoder":
            raise RuntimeError("CUDA error: injected failure")
        return gpu_check.measure_item(item, c, deadline, start_batch)

    out = tmp_path / "gpu_check.json"
    result = run_check(out, _small(), measure=measure)
    status = {e["name"]: e["status"] for e in result["items"]}
    assert status == {"tiny_diffusion": "ok", "tiny_autoencoder": "error", "bench": "ok"}
    failed = result["items"][1]
    assert failed["error"] == "RuntimeError: CUDA error: injected failure" and _positive(failed["seconds"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result)) and result["complete"] is True


def test_time_budget_skips_items_with_a_note(tmp_path):
    result = run_check(tmp_path / "a.json", _small(budget_s=0.0))
    assert [e["status"] for e in result["items"]] == ["skipped"] * 3
    assert all("time budget" in e["note"] for e in result["items"])

    def late(item, c, deadline, start_batch):  # the budget runs out inside the item: it stops at its next step
        return gpu_check.measure_item(item, c, time.perf_counter(), start_batch)

    result = run_check(tmp_path / "b.json", _small(bench_min_s=1e9), only=("tiny_diffusion", "bench"), measure=late)
    first, bench = result["items"]
    assert first["status"] == "skipped" and "during this item" in first["note"]
    assert bench["status"] == "skipped" and "time budget" in bench["note"]  # too little left for the bench


def test_out_of_memory_halves_the_batch(monkeypatch):
    tried = []

    def fake_steps(item, model, cfg, c, batch_size, deadline):
        tried.append(batch_size)
        if batch_size > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return {"batch_size": batch_size}

    monkeypatch.setattr(gpu_check, "train_steps", fake_steps)
    c = CheckConfig.smoke_config()
    row = gpu_check.measure_item(CheckItem("tiny", "diffusion"), c, math.inf)
    assert tried == [16, 8, 4] and row["batch_size"] == 4 and row["out_of_memory_batch_sizes"] == [16, 8]
    with pytest.raises(torch.OutOfMemoryError):
        gpu_check.measure_item(CheckItem("tiny", "diffusion"), dataclasses.replace(c, min_batch=16), math.inf)


def test_paper_items_build_without_weights():
    """Every item of the full check builds offline with its stand-in encoder (meta device: shapes only)."""
    shapes = {"bert-base-uncased": (30522, 768), "gpt2": (50257, 768)}
    items = [x for x in CheckConfig().order if isinstance(x, CheckItem)]
    assert {x.preset for x in items} == {"cosmos_roc_n16", "cosmos_roc_n128", "ldlm_lm1b", "ldlm_owt"}
    assert BENCH in CheckConfig().order and CheckConfig().bench.batch == 512
    for item in items:
        with torch.device("meta"):
            cfg, model = gpu_check.build_model(item)
        encoder = model.encoder
        assert (encoder.vocab_size, encoder.hidden_size) == shapes[cfg.encoder.name], item.name
        assert model.latent_shape[0] == cfg.autoencoder.num_latents


def test_cli_flags(capsys):
    assert build_parser().parse_args(["bench", "--batch", "512"]).batch == 512
    if not torch.cuda.is_available():
        assert main(["gpu-check", "--out", "unused.json"]) == 2
        assert "needs a CUDA device" in capsys.readouterr().err
