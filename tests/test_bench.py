"""``ldlm bench --smoke``: the benchmark runs end to end in seconds and writes sane JSON, PNG and Markdown (no
timing asserts)."""

from __future__ import annotations

import json
import math

from ldlm.apps.bench.benchmarks import BenchConfig, run_benchmarks
from ldlm.cli import main


def _positive(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def test_bench_smoke_writes_json_and_png(tmp_path):
    out = tmp_path / "bench.json"
    (tmp_path / "quickstart.json").write_text(json.dumps({"peak_rss_gib": 2.25}))  # as `ldlm quickstart` writes it
    result = run_benchmarks(out, smoke=True)
    assert json.loads(out.read_text()).keys() == result.keys()
    assert out.with_suffix(".png").stat().st_size > 0
    assert "| cosmos autoencoder | tiny | on |" in out.with_suffix(".md").read_text()
    assert result["quickstart_peak_rss_gib"] == 2.25 and "quickstart.json" in result["notes"]["quickstart_peak_rss_gib"]
    lo, mid = BenchConfig.smoke_config().lengths[:2]
    for key in (
        "matmul_peak_gflops",
        f"sampling_time_ratio_L{mid}_over_L{lo}",
        f"ar_time_ratio_L{mid}_over_L{lo}",
        "step_cost_ratio_token_over_latent",
        "denoiser_fraction_of_peak",
        "bench_peak_rss_gib",
        "quickstart_shaped_training_peak_rss_gib",
    ):
        assert _positive(result[key]), key
    assert {"cpu", "torch_threads", "torch"} <= set(result["machine"])
    assert result["config"]["smoke"] is True
    rows = result["sampling"]["rows"] + result["step_cost"] + result["denoiser_flops"]
    assert all(_positive(v) for row in rows for v in row.values())
    assert _positive(result["sampling"]["latent_params"]) and _positive(result["sampling"]["ar_params"])
    _check_training(result["training"])
    _check_quality_speed(result, BenchConfig.smoke_config())
    assert "| L | batch | latent (s) | AR (s) | latent / AR |" in out.with_suffix(".md").read_text()


def _check_quality_speed(result: dict, c: BenchConfig) -> None:
    """latent_over_ar_time_L{L}[batch_{B}] exist, are positive and are the stored seconds' ratio (no timing)."""
    detail = result["latent_over_ar_time"]
    assert (detail["sampler"], detail["steps"]) == ("ddim", 32) and detail["torch_threads"] == 1
    cells = {(n, b) for n in c.quality_lengths for b in c.quality_batches}
    assert {(r["length"], r["batch"]) for r in detail["rows"]} == cells
    for row in detail["rows"]:
        ratio = result[f"latent_over_ar_time_L{row['length']}"][f"batch_{row['batch']}"]
        assert _positive(row["latent_s"]) and _positive(row["ar_s"]) and _positive(ratio)
        assert ratio == row["ratio"] == row["latent_s"] / row["ar_s"]
    assert {k: result["config"][k] for k in ("quality_sampler", "quality_steps")} == {
        "quality_sampler": "ddim",
        "quality_steps": 32,
    }


def test_bench_quality_only_merges_into_the_existing_json(tmp_path):
    out = tmp_path / "bench.json"
    out.write_text(json.dumps({"config": {"batch": 8}, "notes": {"x": "kept"}, "other": 1.5}))
    result = run_benchmarks(out, smoke=True, quality_only=True, quality_sampler="euler", quality_steps=3)
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["other"] == 1.5 and result["config"]["batch"] == 8 and result["notes"]["x"] == "kept"
    assert result["config"]["quality_sampler"] == "euler" and result["latent_over_ar_time"]["steps"] == 3
    assert "torch.get_num_threads() = 1" in result["notes"]["latent_over_ar_threads"]
    c = BenchConfig.smoke_config()
    lo, mid = c.quality_lengths
    assert set(result[f"latent_over_ar_time_L{lo}"]) == {f"batch_{b}" for b in c.quality_batches}
    for row in result["latent_over_ar_time"]["rows"]:
        assert row["ratio"] == row["latent_s"] / row["ar_s"] > 0
    # a re-run at other lengths replaces every earlier latent_over_ar_time_L* key: no mixed settings in one file
    again = run_benchmarks(out, smoke=True, quality_only=True, quality_steps=2, quality_lengths=(lo,))
    assert [k for k in again if k.startswith("latent_over_ar_time_L")] == [f"latent_over_ar_time_L{lo}"]


def _check_training(training: dict) -> None:
    names = [row["name"] for row in training["rows"]]
    assert names == [
        "cosmos_autoencoder_cached",
        "cosmos_autoencoder_uncached",
        "cosmos_diffusion",
        "ldlm_joint_cached",
        "ldlm_joint_uncached",
    ]
    for row in training["rows"]:
        assert _positive(row["samples_per_s"]) and _positive(row["peak_rss_gib"]), row
        assert row["steps"] == 2 and row["at_step"] == 10  # the middle of the tiny presets' 20-step stages
    assert set(training["feature_cache_speedup"]) == {"cosmos_autoencoder", "ldlm_joint"}


def test_bench_cli_rejects_non_json_out(tmp_path, capsys):
    assert main(["bench", "--smoke", "--out", str(tmp_path / "bench.txt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ldlm bench: error:")
