"""Two processes on CPU (gloo) through ``torchrun``: identical weights on both ranks, the same global batches as
one process, metrics averaged over ranks, a non-finite loss on one rank skipped by all, files from rank 0 only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ldlm.training.distributed import batch_layout

WORKER = Path(__file__).with_name("dist_worker.py")


def test_batch_layout_keeps_the_global_batch():
    assert batch_layout(16, 1, 1) == (16, 1)
    assert batch_layout(16, 1, 2) == (8, 1)
    assert batch_layout(1024, 4, 1) == (256, 4)  # one process: the configured accumulation
    assert batch_layout(1024, 4, 2) == (256, 2)  # two: the same micro-batch, half the accumulation
    assert batch_layout(1024, 4, 8) == (128, 1)
    assert batch_layout(96, 4, 2) == (24, 2)
    with pytest.raises(ValueError, match="not divisible by 3"):
        batch_layout(16, 1, 3)


def test_streams_of_two_ranks_partition_the_single_process_batches():
    from ldlm.data.batches import BatchStream

    single = BatchStream(50, 12, lambda idx: idx.tolist(), seed=4).shard(rank=0, world=1, accum=2)
    ranks = [BatchStream(50, 12, lambda idx: idx.tolist(), seed=4).shard(rank=r, world=2, accum=3) for r in (0, 1)]
    for _ in range(10):  # 4 global batches per epoch: crosses epochs
        expected = next(single) + next(single)
        got = [i for stream in ranks for _ in range(3) for i in next(stream)]
        assert got == expected and len(set(got)) == 12
    resumed = BatchStream(50, 12, lambda idx: idx.tolist(), seed=4).shard(rank=1, world=2, accum=3).seek(7)
    fresh = BatchStream(50, 12, lambda idx: idx.tolist(), seed=4).shard(rank=1, world=2, accum=3)
    for _ in range(7 * 3):
        next(fresh)
    assert [next(resumed) for _ in range(9)] == [next(fresh) for _ in range(9)]  # seek == replay


def _worker(out: Path, nproc: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if nproc == 1:
        cmd = [sys.executable, str(WORKER), str(out), *extra]
    else:
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        cmd = [*torchrun, str(WORKER), str(out), *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _concat(steps: dict) -> dict[str, list[int]]:
    return {step: [i for micro in micros for i in micro] for step, micros in steps.items()}


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without torch.distributed")
def test_torchrun_two_processes_on_cpu(tmp_path):
    two = _worker(tmp_path / "two", 2, "toy")
    one = _worker(tmp_path / "one", 1)
    out_two, _ = two.communicate(timeout=300)
    out_one, _ = one.communicate(timeout=300)
    assert two.returncode == 0, out_two[-4000:]
    assert one.returncode == 0, out_one[-4000:]
    reports = [json.loads((tmp_path / "two" / f"rank{r}.json").read_text()) for r in (0, 1)]
    single = json.loads((tmp_path / "one" / "rank0.json").read_text())
    assert [r["world"] for r in reports] == [2, 2] and single["world"] == 1

    # the ranks hold identical weights after every stage of the recipe
    w0, w1 = (load_file(str(tmp_path / "two" / f"rank{r}.safetensors")) for r in (0, 1))
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)

    # every global batch is the single-process run's: rank 0's half then rank 1's, no row twice
    assert reports[0]["batches"].keys() == single["batches"].keys() and len(single["batches"]) >= 2
    for stream, steps in single["batches"].items():
        rank_rows = [_concat(r["batches"][stream]) for r in reports]
        for step, rows in _concat(steps).items():
            assert rank_rows[0][step] + rank_rows[1][step] == rows, (stream, step)
            assert len(rank_rows[0][step]) == len(rank_rows[1][step]) == len(rows) // 2

    # metrics are averaged over ranks (rank r logs loss r + 1); inf on rank 1 at step 2 skips the step everywhere
    for report in reports:
        rows = report["toy_history"]
        assert [r["loss"] for r in rows if "loss" in r] == [1.5, 1.5]
        assert [r["step"] for r in rows if "skipped" in r] == [3]
        assert report["toy_w"] == pytest.approx(0.7, abs=1e-4)  # three applied Adam steps of ~lr from 1.0
    # the adaptive sampler folds in both ranks' samples (4 forwards x 2 ranks x 4) and stays identical on both
    sampler = [r["toy_sampler"] for r in reports]
    assert sampler[0] == sampler[1] and sampler[0]["samples_seen"] == 32

    # only rank 0 writes: one row per log step, one summary, one model; checkpoints hold both ranks' RNG state
    run_dir = tmp_path / "two" / "tiny"
    rows = [json.loads(line) for line in (run_dir / "diffusion" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6, 6]
    assert (run_dir / "summary.json").is_file() and (run_dir / "model" / "model.safetensors").is_file()
    rng = load_file(str(run_dir / "diffusion" / "checkpoints" / "step_00000003" / "rng.safetensors"))
    assert {"rank0.generator.generator", "rank1.generator.generator"} <= set(rng)
    assert not torch.equal(rng["rank0.generator.generator"], rng["rank1.generator.generator"])  # distinct noise
