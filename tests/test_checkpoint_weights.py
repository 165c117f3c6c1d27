"""A point on a learning curve: the EMA weights of a training checkpoint loaded into the saved model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ldlm.config import TrainConfig
from ldlm.training.checkpoint import CheckpointError, load_ema_weights
from ldlm.training.train import Trainer


class _Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.denoiser = nn.Linear(3, 3)
        self.frozen = nn.Linear(3, 3)  # not trained by the task: untouched by the checkpoint


class _Task(nn.Module):
    def __init__(self, model: _Model):
        super().__init__()
        self.denoiser = model.denoiser  # a task holds model parts under the model's names

    def forward(self, batch, step):
        loss = (self.denoiser(torch.ones(2, 3)) - 5).pow(2).mean()
        return loss, {"loss": loss.item()}


def _batches():
    while True:
        yield {}


def test_checkpoint_ema_weights_load_into_a_fresh_model(tmp_path):
    torch.manual_seed(0)
    model = _Model()
    tcfg = TrainConfig(
        steps=6, batch_size=1, lr=0.1, warmup_steps=0, ema_decay=0.5, ema_update_after=0,
        eval_every=10**9, log_every=2, save_every=3, keep_checkpoints=5, mixed_precision="no",
    )  # fmt: skip
    trainer = Trainer(_Task(model), tcfg, log_dir=tmp_path, name="toy", progress=False)
    trainer.fit(_batches())
    ckpt = tmp_path / "checkpoints" / "step_00000003"
    ema_at_3 = {k: v.clone() for k, v in trainer.load_checkpoint(ckpt) and trainer.ema.ema_model.state_dict().items()}

    fresh = _Model()
    frozen_before = fresh.frozen.weight.clone()
    assert load_ema_weights(fresh, ckpt) == 2  # weight and bias of the denoiser
    torch.testing.assert_close(fresh.denoiser.weight, ema_at_3["denoiser.weight"])
    assert not torch.allclose(fresh.denoiser.weight, model.denoiser.weight)  # step 3, not the final weights
    assert torch.equal(fresh.frozen.weight, frozen_before)

    class Other(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(4, 4)

    with pytest.raises(CheckpointError, match="none of its"):
        load_ema_weights(Other(), ckpt)
