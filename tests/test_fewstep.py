"""scripts/fewstep.py: merging `ldlm sweep` JSONs, the recommended few-step sampler, the PNG."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fewstep():
    return load_script("fewstep")


def _metric(mean: float, std: float = 0.0) -> dict:
    return {"mean": mean, "std": std, "n": 3, "values": [mean - std, mean, mean + std]}


def _sweep(table: dict[tuple[str, int], tuple[float, float]], std: float = 0.0) -> dict:
    """A multi-sampler sweep: (sampler, steps) -> (judge PPL, MAUVE); MAUVE std ``std``, PPL std ``1000 std``."""
    rows = [
        {
            "sampler": sampler,
            "steps": steps,
            "seconds_per_sample": 0.01 * steps,
            "judge_ppl": _metric(ppl, std * 1000),
            "entropy": _metric(3.0, 0.01),
            "mauve": _metric(mauve, std),
            "div": _metric(0.5),
        }
        for (sampler, steps), (ppl, mauve) in table.items()
    ]
    return {
        "run": "runs/x",
        "config": "x",
        "protocol": {"seeds": [0, 1, 2], "samplers": ["euler", "ddim"]},
        "rows": rows,
    }


TABLE = {
    ("euler", 16): (1000.0, 0.20),
    ("euler", 200): (800.0, 0.30),
    ("ddim", 8): (900.0, 0.28),
    ("ddim", 16): (830.0, 0.31),
    ("dpmpp_2m", 16): (820.0, 0.33),
}


def test_recommends_the_fewest_calls_within_one_std(fewstep):
    # std 0.05 MAUVE / 50 PPL: ddim 8 is 100 PPL worse (out), both 16-call rows are in; the lower PPL wins the tie
    rec = fewstep.recommend(_sweep(TABLE, std=0.05))
    assert (rec["sampler"], rec["steps"], rec["speedup"]) == ("dpmpp_2m", 16, 12.5)
    # wider seed noise (150 PPL, 0.15 MAUVE): ddim at 8 calls is now within one std
    rec = fewstep.recommend(_sweep(TABLE, std=0.15))
    assert (rec["sampler"], rec["steps"]) == ("ddim", 8)
    # numbers change: dpmpp_2m 16 loses on MAUVE beyond one std, ddim 16 keeps it
    worse = {**TABLE, ("dpmpp_2m", 16): (820.0, 0.20)}
    rec = fewstep.recommend(_sweep(worse, std=0.05))
    assert (rec["sampler"], rec["steps"]) == ("ddim", 16)
    # nothing qualifies below 200 calls: Euler at 200 itself
    none = {k: (v if k == ("euler", 200) else (5000.0, 0.01)) for k, v in TABLE.items()}
    assert fewstep.recommend(_sweep(none, std=0.05))["steps"] == 200


def test_the_larger_std_of_the_two_rows_counts(fewstep):
    sweep = _sweep({("euler", 200): (800.0, 0.30), ("ddim", 8): (850.0, 0.30)})
    assert fewstep.recommend(sweep)["steps"] == 200  # stds 0: 50 PPL worse is out
    sweep["rows"][1]["judge_ppl"]["std"] = 60.0  # the candidate's own std is the larger one
    assert fewstep.recommend(sweep)["steps"] == 8


def test_single_sampler_sweeps_and_missing_target(fewstep):
    sweep = _sweep({("euler", 25): (790.0, 0.35), ("euler", 200): (800.0, 0.30)})
    for r in sweep["rows"]:
        del r["sampler"]  # `ldlm sweep` with one sampler: rows without the key, the protocol names it
    sweep["protocol"] = {"sampler": "euler", "seeds": [0]}
    assert fewstep.recommend(sweep)["steps"] == 25
    rec = fewstep.recommend(_sweep({("ddim", 16): (800.0, 0.3)}))
    assert rec["sampler"] is None and "200" in rec["reason"]


def test_main_writes_json_and_png(fewstep, tmp_path):
    paths = []
    for name, table in (("a", TABLE), ("b", {**TABLE, ("dpmpp_2m", 16): (820.0, 0.20)})):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(_sweep(table, std=0.05)))
        paths.append(f"{name}={path}")
    out = tmp_path / "fewstep.json"
    result = fewstep.main(["--model", paths[0], "--model", paths[1], "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result))
    assert set(saved["models"]) == {"a", "b"} and set(saved["models"]["a"]) == {"run", "protocol", "rows"}
    assert saved["recommended"]["a"]["sampler"] == "dpmpp_2m" and saved["recommended"]["b"]["sampler"] == "ddim"
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically: no temporary left behind
    with pytest.raises(SystemExit):
        fewstep.main(["--model", "no-equals-sign"])
