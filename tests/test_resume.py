"""Exact resume: a run killed mid-way and resumed ends with the same weights and logged losses as an uninterrupted
run with the same seed; damaged checkpoints are detected, reported and skipped."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from ldlm.config import TrainConfig
from ldlm.training.train import Trainer, infinite_batches

# ----------------------------------------------------------------------------- a toy task with every kind of state


class NoisyRegression(nn.Module):
    """Regression with input noise from its own generator, a dropout-like mask from the global RNG and a buffer:
    resuming is exact only if the weights, optimiser, scheduler, EMA, both RNGs and the data position are restored."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 1)
        self.register_buffer("seen", torch.zeros(()))
        self.generator = torch.Generator().manual_seed(7)

    def forward(self, batch, step):
        x = batch["x"] + 0.1 * torch.randn(batch["x"].shape, generator=self.generator)
        keep = (torch.rand(x.shape) > 0.2).float()  # global torch RNG
        loss = ((self.lin(x * keep).squeeze(-1) - batch["y"]) ** 2).mean()
        self.seen += x.shape[0]
        return loss, {"loss": loss.item()}


def _data(n=96):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) - 0.5
    return lambda idx: {"x": x[idx], "y": y[idx]}


def _tcfg(**kw) -> TrainConfig:
    base = dict(
        steps=14, batch_size=16, grad_accum=2, lr=0.05, warmup_steps=3, lr_schedule="cosine", ema_decay=0.8,
        ema_update_after=2, eval_every=10**9, log_every=3, save_every=4, keep_checkpoints=2, mixed_precision="no",
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def _train(log_dir: Path, *, resume: bool = False, crash_at: int | None = None) -> NoisyRegression:
    task = NoisyRegression()
    make = _data()

    def batch(idx):
        if crash_at is not None and trainer_state["steps"] >= crash_at * 2:  # micro-batches before the crash
            raise KeyboardInterrupt("simulated crash")
        trainer_state["steps"] += 1
        return make(idx)

    trainer_state = {"steps": 0}
    trainer = Trainer(task, _tcfg(), log_dir=log_dir, name="toy", progress=False, resume=resume)
    trainer.fit(infinite_batches(96, 16, batch, seed=3))
    return task


def _rows(log_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (log_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_trainer_resume_after_crash_is_exact(tmp_path):
    reference = _train(tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "run", crash_at=11)  # checkpoints at 4 and 8; log rows at 3, 6, 9
    assert [p.name for p in sorted((tmp_path / "run" / "checkpoints").iterdir())] == ["step_00000004", "step_00000008"]
    assert _rows(tmp_path / "run")[-1]["step"] == 9  # logged past the checkpoint: the resume must drop that row
    resumed = _train(tmp_path / "run", resume=True)
    _assert_same_weights(resumed.state_dict(), reference.state_dict())  # EMA weights + buffer
    assert _rows(tmp_path / "run") == _rows(tmp_path / "ref")  # every loss, lr, in order, nothing repeated


def test_resume_without_restoring_rng_would_differ(tmp_path, monkeypatch):
    """The test above can fail: skipping the RNG restore makes the resumed run diverge."""
    reference = _train(tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "run", crash_at=11)
    monkeypatch.setattr("ldlm.training.train.restore_this_rank", lambda *args, **kwargs: None)
    resumed = _train(tmp_path / "run", resume=True)
    assert not torch.equal(resumed.lin.weight, reference.lin.weight)


@pytest.mark.parametrize("damage", ["truncate", "bitflip", "no_state"])
def test_damaged_checkpoint_is_reported_and_the_previous_one_used(tmp_path, caplog, damage):
    reference = _train(tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "run", crash_at=11)
    newest = tmp_path / "run" / "checkpoints" / "step_00000008"
    target = newest / "model.safetensors"
    if damage == "truncate":
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    elif damage == "bitflip":  # same size, valid header: only the checksum can tell
        data = bytearray(target.read_bytes())
        data[-3] ^= 0xFF
        target.write_bytes(bytes(data))
    else:
        (newest / "state.json").unlink()
    with caplog.at_level(logging.WARNING):
        resumed = _train(tmp_path / "run", resume=True)
    report = " ".join(r.getMessage() for r in caplog.records)
    assert "step_00000008 is unusable" in report and "previous one" in report
    expected = {"truncate": "truncated", "bitflip": "sha256", "no_state": "state.json"}[damage]
    assert expected in report
    _assert_same_weights(resumed.state_dict(), reference.state_dict())  # resumed from step 4 instead: still exact


def test_only_the_newest_checkpoints_are_kept_and_all_are_safetensors(tmp_path):
    task = NoisyRegression()
    trainer = Trainer(task, _tcfg(steps=21, keep_checkpoints=3), log_dir=tmp_path, name="toy", progress=False)
    trainer.fit(infinite_batches(96, 16, _data(), seed=3))
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == ["step_00000012", "step_00000016", "step_00000020"]
    files = sorted(p.name for p in (tmp_path / "checkpoints" / "step_00000020").iterdir())
    assert files == ["ema.safetensors", "model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json"]
    state = json.loads((tmp_path / "checkpoints" / "step_00000020" / "state.json").read_text())
    assert state["step"] == 20 and state["scheduler"]["last_epoch"] == 20
    assert state["optimizer"]["param_groups"][0]["betas"] == [0.9, 0.98]
    opt = load_file(str(tmp_path / "checkpoints" / "step_00000020" / "optimizer.safetensors"))
    assert {"0.exp_avg", "0.exp_avg_sq", "0.step"} <= set(opt)
    rng = load_file(str(tmp_path / "checkpoints" / "step_00000020" / "rng.safetensors"))
    assert {"rank0.torch_cpu", "rank0.generator.generator", "rank0.numpy_keys"} <= set(rng)


# ----------------------------------------------------------------------------- SIGKILL of a real `ldlm train`

TINY = [
    "autoencoder_train.steps=8",
    "autoencoder_train.save_every=4",
    "diffusion_train.steps=240",
    "diffusion_train.save_every=20",
    "diffusion_train.log_every=10",
    "diffusion_train.eval_every=100",
]


def _ldlm_train(out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "ldlm.cli", "train", "tiny", f"output_dir={out}/{{name}}", *TINY, "--quiet", *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _losses(run_dir: Path, stage: str) -> list[tuple]:
    rows = [json.loads(line) for line in (run_dir / stage / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r.get("loss"), r.get("val_loss")) for r in rows]


def test_sigkill_mid_run_then_resume_equals_uninterrupted_run(tmp_path):
    full = _ldlm_train(tmp_path / "full")  # the reference runs at the same time (one thread each)
    killed = _ldlm_train(tmp_path / "killed")
    ckpts = tmp_path / "killed" / "tiny" / "diffusion" / "checkpoints"
    deadline = time.time() + 120
    while not (ckpts.is_dir() and any(p.name >= "step_00000040" for p in ckpts.iterdir())):
        assert killed.poll() is None, f"the run ended before it could be killed:\n{killed.communicate()[1][-2000:]}"
        assert time.time() < deadline
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)  # mid diffusion stage, after the autoencoder stage finished
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    run_dir = tmp_path / "killed" / "tiny"
    assert not (run_dir / "model").exists()
    autoencoder_log = (run_dir / "autoencoder" / "metrics.jsonl").read_text()

    resumed = _ldlm_train(tmp_path / "killed", "--resume")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    out, full_err = full.communicate(timeout=300)
    assert full.returncode == 0, full_err[-3000:]

    assert "stage 'autoencoder' finished in an earlier run" in err  # skipped, not retrained
    assert (run_dir / "autoencoder" / "metrics.jsonl").read_text() == autoencoder_log
    step = int(err.split("diffusion: resuming at step ")[1].split()[0])
    assert 40 <= step < 240
    ref_dir = tmp_path / "full" / "tiny"
    for stage in ("autoencoder", "diffusion"):
        assert _losses(run_dir, stage) == _losses(ref_dir, stage)
    assert [s for s, *_ in _losses(run_dir, "diffusion") if s > step]  # rows after the resume point were compared
    _assert_same_weights(
        load_file(str(run_dir / "model" / "model.safetensors")), load_file(str(ref_dir / "model" / "model.safetensors"))
    )
    assert (
        json.loads((run_dir / "summary.json").read_text())["val_diffusion_loss"]
        == json.loads(out)["val_diffusion_loss"]
    )


# ------------------------------------------------------------------ LDLM: joint stage skipped, decoder resumed

LDLM_TINY = ["joint_train.steps=10", "joint_train.save_every=5", "decoder_train.steps=6", "decoder_train.save_every=2"]


def _ldlm_run(out: Path, *extra: str) -> tuple[dict, str]:
    from ldlm import cli

    rc = cli.main(["train", "ldlm_tiny", f"output_dir={out}/{{name}}", *LDLM_TINY, "--quiet", *extra])
    assert rc == 0
    run_dir = out / "ldlm_tiny"
    return load_file(str(run_dir / "model" / "model.safetensors")), (run_dir / "decoder" / "metrics.jsonl").read_text()


def test_ldlm_crash_in_post_training_resumes_without_retraining_the_joint_stage(tmp_path, monkeypatch, caplog):
    reference, ref_log = _ldlm_run(tmp_path / "ref")
    real_step = Trainer._train_step

    def crash_in_decoder(self, batches, step, accum):
        if self.name == "decoder" and step == 3:
            raise KeyboardInterrupt("simulated crash")
        return real_step(self, batches, step, accum)

    with monkeypatch.context() as m:
        m.setattr(Trainer, "_train_step", crash_in_decoder)
        with pytest.raises(KeyboardInterrupt):
            _ldlm_run(tmp_path / "run")
    joint_log = (tmp_path / "run" / "ldlm_tiny" / "joint" / "metrics.jsonl").read_text()
    with caplog.at_level(logging.INFO):
        weights, log = _ldlm_run(tmp_path / "run", "--resume")
    assert "stage 'joint' finished in an earlier run" in caplog.text
    assert "decoder: resuming at step 2" in caplog.text
    assert (tmp_path / "run" / "ldlm_tiny" / "joint" / "metrics.jsonl").read_text() == joint_log
    _assert_same_weights(weights, reference)  # incl. the adaptive sampler's buffers and the fresh token decoder
    strip = lambda text: [{k: v for k, v in json.loads(r).items() if k != "elapsed_s"} for r in text.splitlines()]
    assert strip(log) == strip(ref_log)


def test_an_output_dir_that_is_a_file_is_refused_before_training_and_left_alone(tmp_path, capsys):
    from ldlm import cli

    taken = tmp_path / "notes.txt"
    taken.write_text("a user's file")
    assert cli.main(["train", "tiny", f"output_dir={taken}"]) == 2
    assert f"output_dir={str(taken)!r} is a file" in capsys.readouterr().err
    assert taken.read_text() == "a user's file"


def test_a_finished_ldlm_run_resumes_with_a_new_deeper_token_decoder(tmp_path, caplog):
    """LDLM App. B.2 on a finished run: its config.json + a 2-block D_w + decoder_train.steps, --resume. The joint
    stage is restored, not retrained (its snapshot has a 1-block D_w), and only the fresh D_w trains."""
    from ldlm import cli

    joint_only = ["joint_train.steps=6", "joint_train.save_every=0", "decoder_train.steps=0"]
    assert cli.main(["train", "ldlm_tiny", f"output_dir={tmp_path}/run", *joint_only, "--quiet"]) == 0
    run = tmp_path / "run"
    joint_log = (run / "joint" / "metrics.jsonl").read_text()
    before = load_file(str(run / "model" / "model.safetensors"))
    deeper = ["autoencoder.token_decoder_layers=2", "decoder_train.steps=4", "decoder_train.save_every=0"]
    with caplog.at_level(logging.INFO):
        assert cli.main(["train", str(run / "config.json"), *deeper, "--quiet", "--resume"]) == 0
    assert "stage 'joint' finished in an earlier run" in caplog.text
    assert (run / "joint" / "metrics.jsonl").read_text() == joint_log
    assert len((run / "decoder" / "metrics.jsonl").read_text().splitlines()) >= 1
    after = load_file(str(run / "model" / "model.safetensors"))
    d_w = ("autoencoder.token_blocks.", "autoencoder.head.")
    assert {k for k in after if k.startswith("autoencoder.token_blocks.1.")}  # the second block exists now
    assert not any(k.startswith("autoencoder.token_blocks.1.") for k in before)
    for key, value in before.items():
        if not key.startswith(d_w):
            torch.testing.assert_close(after[key], value, rtol=0, atol=0, msg=key)  # E_z, D_h, denoiser: frozen
    assert not torch.equal(after["autoencoder.head.weight"], before["autoencoder.head.weight"])
    assert json.loads((run / "config.json").read_text())["autoencoder"]["token_decoder_layers"] == 2
