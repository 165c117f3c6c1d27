"""The training loop: LR schedule, optimisation on a toy task, EMA weights, NaN guard, batching."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from ldlm.config import TrainConfig
from ldlm.training.train import Trainer, infinite_batches, lr_lambda


def _tcfg(**kw):
    base = dict(
        steps=60,
        batch_size=32,
        lr=0.05,
        warmup_steps=0,
        ema_decay=0.9,
        ema_update_after=0,
        eval_every=10**9,
        log_every=10,
        save_every=0,
        mixed_precision="no",
        grad_clip=1.0,
        weight_decay=0.0,
    )
    base.update(kw)
    return TrainConfig(**base)


# ----------------------------------------------------------------------------- learning rate


def test_lr_warmup_then_constant():
    f = lr_lambda(_tcfg(steps=100, warmup_steps=4, lr_schedule="constant"))
    assert [f(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert f(99) == 1.0 and f(10**6) == 1.0


def test_lr_no_warmup():
    f = lr_lambda(_tcfg(steps=10, warmup_steps=0))
    assert f(0) == 1.0


def test_lr_cosine_after_warmup():
    f = lr_lambda(_tcfg(steps=14, warmup_steps=4, lr_schedule="cosine", min_lr_ratio=0.1))
    assert f(0) == 0.25 and f(3) == 1.0
    assert f(4) == pytest.approx(1.0)  # start of the cosine
    assert f(9) == pytest.approx(0.1 + 0.9 * 0.5)  # half way
    assert f(4 + 2.5) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.25)))
    assert f(14) == pytest.approx(0.1) and f(1000) == pytest.approx(0.1)  # floor at min_lr_ratio
    values = [f(s) for s in range(4, 15)]
    assert all(a >= b for a, b in zip(values[:-1], values[1:], strict=True))


# ----------------------------------------------------------------------------- toy task


class Regression(nn.Module):
    """y = x @ w_true + 1: the task returns (loss, metrics) like the recipes' tasks."""

    def __init__(self, nan_at=None):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(3, 1)
        self.nan_at = nan_at
        self.seen_params: dict[int, dict] = {}

    def forward(self, batch, step):
        self.seen_params[step] = {k: v.detach().clone() for k, v in self.state_dict().items()}
        pred = self.lin(batch["x"]).squeeze(-1)
        loss = ((pred - batch["y"]) ** 2).mean()
        if self.nan_at is not None and step == self.nan_at:
            loss = loss * float("nan")
        return loss, {"loss": loss.item()}


def _data(n=256):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g)
    y = x @ torch.tensor([1.5, -2.0, 0.5]) + 1.0
    return lambda idx: {"x": x[idx], "y": y[idx]}


def test_trainer_reduces_loss_and_logs(tmp_path):
    task = Regression()
    tc = _tcfg(steps=60, eval_every=30)
    trainer = Trainer(task, tc, log_dir=tmp_path, name="toy", progress=False)
    make = _data()
    evals = []

    def eval_fn(ema_task):
        evals.append(ema_task)
        b = make(torch.arange(256))
        return {"mse": ((ema_task.lin(b["x"]).squeeze(-1) - b["y"]) ** 2).mean().item()}

    history = trainer.fit(infinite_batches(256, tc.batch_size, make, seed=0), eval_fn)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == history
    train_rows = [r for r in rows if "loss" in r]
    val_rows = [r for r in rows if "val_mse" in r]
    assert [r["step"] for r in train_rows] == [10, 20, 30, 40, 50, 60]
    assert [r["step"] for r in val_rows] == [30, 60]
    assert all({"lr", "elapsed_s"} <= r.keys() for r in train_rows)
    assert train_rows[-1]["loss"] < 0.1 * train_rows[0]["loss"]
    assert val_rows[-1]["val_mse"] < val_rows[0]["val_mse"]
    assert evals[0] is trainer.ema.ema_model  # validation runs on the EMA weights
    # a second fit starts a fresh log
    Trainer(Regression(), _tcfg(steps=10), log_dir=tmp_path, name="toy", progress=False).fit(
        infinite_batches(256, 32, make, seed=0)
    )
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


def test_final_weights_are_the_ema_weights(tmp_path, monkeypatch):
    task = Regression()
    tc = _tcfg(steps=30, ema_decay=0.8)
    trainer = Trainer(task, tc, log_dir=tmp_path, name="toy", progress=False)
    captured = {}
    real_load = task.load_state_dict

    def spy(state, *args, **kwargs):
        captured["online"] = {k: v.detach().clone() for k, v in task.state_dict().items()}
        captured["loaded"] = {k: v.detach().clone() for k, v in state.items()}
        return real_load(state, *args, **kwargs)

    monkeypatch.setattr(task, "load_state_dict", spy)
    trainer.fit(infinite_batches(256, tc.batch_size, _data(), seed=0))
    ema = trainer.ema.ema_model.state_dict()
    final = task.state_dict()
    for key in final:
        assert torch.equal(final[key], ema[key])
        assert torch.equal(captured["loaded"][key], ema[key])
    # the EMA is a real average that lags the online weights, not a copy of them
    assert any(not torch.allclose(captured["online"][k], ema[k]) for k in final)


def test_nan_loss_raises_and_leaves_weights_unchanged(tmp_path):
    task = Regression(nan_at=3)
    trainer = Trainer(task, _tcfg(steps=10), log_dir=tmp_path, name="toy", progress=False)
    with pytest.raises(FloatingPointError, match="step 3") as err:
        trainer.fit(infinite_batches(256, 32, _data(), seed=0))
    assert "toy" in str(err.value)
    after = task.state_dict()
    for key, value in task.seen_params[3].items():  # the weights the failing step started from
        assert torch.equal(after[key], value)
    assert torch.isfinite(task.lin.weight).all()


def test_nan_in_earlier_micro_batch_is_caught(tmp_path):
    class FirstMicroBatchNaN(Regression):
        calls = 0

        def forward(self, batch, step):
            loss, metrics = super().forward(batch, step)
            FirstMicroBatchNaN.calls += 1
            if FirstMicroBatchNaN.calls == 1:  # first micro-batch of step 0
                loss = loss * float("nan")
            return loss, metrics

    task = FirstMicroBatchNaN()
    before = {k: v.clone() for k, v in task.state_dict().items()}
    trainer = Trainer(task, _tcfg(steps=2, grad_accum=2), log_dir=tmp_path, name="toy", progress=False)
    with pytest.raises(FloatingPointError, match="step 0"):
        trainer.fit(infinite_batches(256, 16, _data(), seed=0))
    for key, value in before.items():
        assert torch.equal(task.state_dict()[key], value)


def test_trainer_rejects_task_without_trainable_parameters(tmp_path):
    frozen = Regression().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        Trainer(frozen, _tcfg(), log_dir=tmp_path, name="frozen", progress=False)


def test_frozen_parameters_are_not_updated(tmp_path):
    task = Regression()
    task.lin.bias.requires_grad_(False)
    bias = task.lin.bias.detach().clone()
    Trainer(task, _tcfg(steps=10), log_dir=tmp_path, name="toy", progress=False).fit(
        infinite_batches(256, 32, _data(), seed=0)
    )
    assert torch.equal(task.lin.bias.detach(), bias)


# ----------------------------------------------------------------------------- batches


def test_infinite_batches_cover_every_index_once_per_epoch():
    it = infinite_batches(12, 4, lambda idx: idx.tolist(), seed=0)
    epochs = [[i for _ in range(3) for i in next(it)] for _ in range(3)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(12))
    assert epochs[0] != epochs[1]  # reshuffled every epoch
    again = infinite_batches(12, 4, lambda idx: idx.tolist(), seed=0)
    assert [i for _ in range(3) for i in next(again)] == epochs[0]  # seeded


def test_infinite_batches_uneven_sizes():
    # 10 items, batch 3: three full batches per epoch (the remainder is dropped), never a repeat in an epoch
    it = infinite_batches(10, 3, lambda idx: idx.tolist(), seed=1)
    for _ in range(4):
        epoch = [next(it) for _ in range(3)]
        assert all(len(b) == 3 for b in epoch)
        flat = [i for b in epoch for i in b]
        assert len(set(flat)) == 9
    # a batch larger than the dataset is the whole (shuffled) dataset
    it = infinite_batches(5, 64, lambda idx: idx.tolist(), seed=0)
    assert sorted(next(it)) == list(range(5)) and sorted(next(it)) == list(range(5))
    with pytest.raises(ValueError, match="empty"):
        next(infinite_batches(0, 4, lambda idx: idx, seed=0))


# ----------------------------------------------------------------------------- non-finite guard


def test_nonfinite_loss_skipped_when_configured(tmp_path, caplog):
    task = Regression(nan_at=3)
    trainer = Trainer(task, _tcfg(steps=10, on_nonfinite="skip"), log_dir=tmp_path, name="toy", progress=False)
    with caplog.at_level("WARNING"):
        trainer.fit(infinite_batches(256, 32, _data(), seed=0))
    assert "toy: non-finite loss (nan on this process) in micro-batch 0 at step 3" in caplog.text
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "skipped" in r] == [4]
    assert rows[-1]["step"] == 10 and math.isfinite(rows[-1]["loss"])  # the run went on
    assert torch.equal(task.seen_params[4]["lin.weight"], task.seen_params[3]["lin.weight"])  # step 3: no update
    assert all(torch.isfinite(v).all() for v in task.state_dict().values())


def test_nonfinite_gradient_norm_stops_before_the_update(tmp_path):
    class InfiniteGradient(Regression):
        def forward(self, batch, step):
            loss, metrics = super().forward(batch, step)
            if step == 2:  # a finite loss whose gradient is infinite: d sqrt(x)/dx at x = 0
                loss = loss + torch.sqrt(self.lin.bias.sum() - self.lin.bias.sum().detach())
            return loss, metrics

    task = InfiniteGradient()
    trainer = Trainer(task, _tcfg(steps=5), log_dir=tmp_path, name="toy", progress=False)
    with pytest.raises(FloatingPointError, match="non-finite gradient norm .* at step 2"):
        trainer.fit(infinite_batches(256, 32, _data(), seed=0))
    for key, value in task.seen_params[2].items():
        assert torch.equal(task.state_dict()[key], value)


def test_max_minutes_ends_the_stage_with_a_final_log_and_evaluation(tmp_path):
    """A stage past its wall-clock budget stops after the current step, logs and evaluates it as the last one."""
    task = Regression()
    tc = _tcfg(steps=50, eval_every=30, max_minutes=1e-9)  # over budget after the first step
    evals = []
    history = Trainer(task, tc, log_dir=tmp_path, name="toy", progress=False).fit(
        infinite_batches(256, tc.batch_size, _data(), seed=0), lambda ema: evals.append(1) or {"m": 0.0}
    )
    assert [r["step"] for r in history] == [1, 1] and len(evals) == 1
    full = Trainer(Regression(), _tcfg(steps=20), log_dir=tmp_path / "b", name="toy", progress=False)
    assert [r["step"] for r in full.fit(infinite_batches(256, 32, _data(), seed=0))][-1] == 20  # None: no budget
