"""Worker for tests/test_distributed.py, started by ``torchrun`` (or plainly, as the single-process reference).

``python dist_worker.py OUT [toy]``: trains the ``tiny`` COSMOS preset through the real recipe (and, with ``toy``,
first a toy task whose loss differs per rank) and writes per rank ``OUT/rank<r>.json`` (the rows each of its
micro-batches read, per stream and step, and the toy's logged rows) and ``OUT/rank<r>.safetensors`` (weights).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from ldlm.config import TrainConfig, load_config
from ldlm.data.batches import BatchStream
from ldlm.diffusion.timesteps import AdaptiveTimesteps
from ldlm.recipes import train_cosmos
from ldlm.training import distributed
from ldlm.training.train import Trainer, infinite_batches

TINY = [
    "autoencoder_train.steps=6",
    "diffusion_train.steps=6",
    "autoencoder_train.save_every=3",
    "diffusion_train.save_every=3",
    "autoencoder_train.log_every=3",
    "diffusion_train.log_every=3",
    "autoencoder_train.eval_every=6",
    "diffusion_train.eval_every=6",
]


class RankLoss(nn.Module):
    """Loss ``w^2 + rank + 1`` (logged: rank + 1, mean over 2 ranks 1.5); non-finite on rank 1 at step 2; an adaptive
    timestep sampler fed 4 samples per rank and step."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.timesteps = AdaptiveTimesteps(bins=4, refresh_every=2)
        self.generator = torch.Generator().manual_seed(0)

    def forward(self, batch, step):
        r = distributed.rank()
        t = self.timesteps.sample(4, self.generator)
        self.timesteps.update(t, t + r)
        loss = self.w**2 * batch["x"].mean() + r + 1
        if r == 1 and step == 2:
            loss = loss * float("inf")
        return loss, {"loss": float(r + 1)}


def record_batches() -> dict:
    """Patch BatchStream so that every micro-batch's rows are recorded as ``{stream: {step: [[rows], ...]}}``."""
    seen: dict = {}
    real = BatchStream.next_indices

    def spy(self: BatchStream) -> torch.Tensor:
        step = self.step
        indices = real(self)
        if not hasattr(self, "record_key"):
            self.record_key = str(len(seen))  # streams in order of first use: head?, autoencoder, diffusion
        seen.setdefault(self.record_key, {}).setdefault(str(step), []).append(indices.tolist())
        return indices

    BatchStream.next_indices = spy
    return seen


def main() -> None:
    out = Path(sys.argv[1])
    report: dict = {}
    if "toy" in sys.argv[2:]:
        tc = TrainConfig(
            steps=4, batch_size=4, lr=0.1, warmup_steps=0, ema_decay=0.0, ema_update_after=0, log_every=2,
            eval_every=10**9, save_every=0, mixed_precision="no", on_nonfinite="skip",
        )  # fmt: skip
        toy = RankLoss()
        trainer = Trainer(toy, tc, log_dir=out / "toy", name="toy", progress=False)
        trainer.fit(infinite_batches(8, 4, lambda idx: {"x": torch.ones(len(idx))}, seed=0))
        report["toy_history"] = trainer.history
        report["toy_w"] = toy.w.item()
        report["toy_sampler"] = {k: v.tolist() for k, v in toy.timesteps.state_dict().items()}
    batches = record_batches()
    cfg = load_config("tiny", [f"output_dir={out}/{{name}}", *TINY])
    model, _ = train_cosmos(cfg, progress=False)
    report.update(rank=distributed.rank(), world=distributed.world_size(), batches=batches)
    (out / f"rank{distributed.rank()}.json").write_text(json.dumps(report))
    weights = {k: v.contiguous() for k, v in model.trained_state_dict().items()}
    save_file(weights, str(out / f"rank{distributed.rank()}.safetensors"))


if __name__ == "__main__":
    main()
