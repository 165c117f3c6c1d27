"""``ldlm bench --smoke``: the benchmark runs end to end in seconds and writes sane JSON + PNG (no timing asserts)."""

from __future__ import annotations

import json
import math

from ldlm.benchmarks import BenchConfig, run_benchmarks
from ldlm.cli import main


def _positive(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def test_bench_smoke_writes_json_and_png(tmp_path):
    out = tmp_path / "bench.json"
    result = run_benchmarks(out, smoke=True)
    assert json.loads(out.read_text()).keys() == result.keys()
    assert out.with_suffix(".png").stat().st_size > 0
    lo, mid = BenchConfig.smoke_config().lengths[:2]
    for key in (
        "matmul_peak_gflops",
        f"sampling_time_ratio_L{mid}_over_L{lo}",
        f"ar_time_ratio_L{mid}_over_L{lo}",
        "step_cost_ratio_token_over_latent",
        "denoiser_fraction_of_peak",
        "bench_peak_rss_gib",
    ):
        assert _positive(result[key]), key
    assert {"cpu", "torch_threads", "torch"} <= set(result["machine"])
    assert result["config"]["smoke"] is True
    rows = result["sampling"]["rows"] + result["step_cost"] + result["denoiser_flops"]
    assert all(_positive(v) for row in rows for v in row.values())
    assert _positive(result["sampling"]["latent_params"]) and _positive(result["sampling"]["ar_params"])


def test_bench_cli_rejects_non_json_out(tmp_path, capsys):
    assert main(["bench", "--smoke", "--out", str(tmp_path / "bench.txt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ldlm bench: error:")
