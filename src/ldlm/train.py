"""One training loop for every stage and recipe, on Accelerate.

A *task* is an ``nn.Module`` whose ``forward(batch, step)`` returns ``(loss, metrics)``; the loop owns
the rest: device placement, bf16 autocast on GPU (fp32 on CPU), gradient accumulation, AdamW with
linear warmup then constant/cosine LR, gradient clipping, EMA of the weights (``ema-pytorch``), periodic
validation, checkpoints (and resuming from them), a progress bar, TensorBoard and a ``metrics.jsonl`` log.
Buffers of the task (e.g. the adaptive timestep sampler's state) are copied into the EMA model, not averaged.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from ldlm.config import TrainConfig
from ldlm.io import atomic_write_text, load_safetensors, save_safetensors


def mixed_precision_for(setting: str) -> str:
    """``auto`` -> bf16 on CUDA, no autocast on CPU (bf16 matmul is slow on CPUs without AMX)."""
    if setting == "auto":
        return "bf16" if torch.cuda.is_available() else "no"
    return setting


def lr_lambda(tcfg: TrainConfig) -> Callable[[int], float]:
    """Linear warmup over ``warmup_steps`` then constant (COSMOS, LDLM) or cosine to ``min_lr_ratio``."""

    def factor(step: int) -> float:
        if tcfg.warmup_steps and step < tcfg.warmup_steps:
            return (step + 1) / tcfg.warmup_steps
        if tcfg.lr_schedule == "constant":
            return 1.0
        span = max(1, tcfg.steps - tcfg.warmup_steps)
        progress = min(1.0, (step - tcfg.warmup_steps) / span)
        return tcfg.min_lr_ratio + (1 - tcfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class Trainer:
    """Optimises ``task`` (its parameters with ``requires_grad``) for ``tcfg.steps`` steps."""

    def __init__(self, task: nn.Module, tcfg: TrainConfig, *, log_dir: str | Path, name: str, progress: bool = True):
        from accelerate import Accelerator
        from ema_pytorch import EMA

        self.tcfg, self.name, self.progress = tcfg, name, progress
        self.log_dir = Path(log_dir)
        self.accelerator = Accelerator(
            mixed_precision=mixed_precision_for(tcfg.mixed_precision), cpu=not torch.cuda.is_available()
        )
        params = [p for p in task.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"stage {name!r} has no trainable parameters")
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]  # biases, norms: no weight decay
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": tcfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=tcfg.lr,
            betas=tcfg.betas,
            eps=tcfg.eps,
            foreach=True,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(tcfg))
        self.task, self.optimizer, self.scheduler = self.accelerator.prepare(task, optimizer, scheduler)
        self.raw_task = task
        buffers = {name for name, _ in task.named_buffers()}  # running state (sampler statistics): copy, not average
        self.ema = EMA(
            task,
            beta=tcfg.ema_decay,
            update_after_step=tcfg.ema_update_after,
            update_every=1,
            param_or_buffer_names_no_ema=buffers,
        )
        self.ema.to(self.accelerator.device)
        self.history: list[dict] = []

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def _log(self, row: dict, writer) -> None:
        self.history.append(row)
        if not self.accelerator.is_main_process:
            return
        with open(self.log_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, int | float):
                    writer.add_scalar(f"{self.name}/{key}", value, row["step"])

    def fit(
        self,
        batches: Iterator[dict],
        eval_fn: Callable[[nn.Module], dict] | None = None,
        *,
        start_step: int = 0,
    ) -> list[dict]:
        """Run the loop; ``batches`` yields micro-batches; ``eval_fn(ema_task)`` returns validation metrics.

        ``start_step`` > 0 continues a run restored by :meth:`load_checkpoint` (its metrics log is appended to).
        At the end the EMA weights are copied into the task, so the caller holds the averaged model.
        """
        from torch.utils.tensorboard import SummaryWriter
        from tqdm.auto import tqdm

        tcfg, acc = self.tcfg, self.accelerator
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if not start_step:
            (self.log_dir / "metrics.jsonl").unlink(missing_ok=True)
        writer = SummaryWriter(str(self.log_dir / "tensorboard")) if acc.is_main_process else None
        bar = tqdm(range(start_step, tcfg.steps), desc=self.name, disable=not self.progress or not acc.is_main_process)
        start = time.perf_counter()
        running: dict[str, float] = {}
        for step in bar:
            self.task.train()
            for _ in range(tcfg.grad_accum):
                with acc.autocast():
                    loss, metrics = self.task(next(batches), step)
                loss_value = loss.item()
                if not math.isfinite(loss_value):  # checked per micro-batch, before any gradient is applied
                    raise FloatingPointError(
                        f"{self.name}: non-finite loss {loss_value} at step {step}; nothing was updated"
                    )
                acc.backward(loss / tcfg.grad_accum)
                for key, value in metrics.items():
                    running[key] = running.get(key, 0.0) + float(value) / (tcfg.grad_accum * tcfg.log_every)
            if tcfg.grad_clip:
                acc.clip_grad_norm_(self.task.parameters(), tcfg.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.ema.update()
            done = step + 1
            if done % tcfg.log_every == 0 or done == tcfg.steps:
                elapsed = time.perf_counter() - start
                row = {"step": done, "lr": self.scheduler.get_last_lr()[0], "elapsed_s": round(elapsed, 2)}
                row.update({k: round(v, 5) for k, v in running.items()})
                self._log(row, writer)
                bar.set_postfix({k: f"{v:.3g}" for k, v in running.items() if k in ("loss", "acc")})
                running = {}
            if eval_fn is not None and (done % tcfg.eval_every == 0 or done == tcfg.steps):
                with torch.no_grad():
                    metrics = eval_fn(self.ema.ema_model.eval())
                self._log({"step": done, **{f"val_{k}": v for k, v in metrics.items()}}, writer)
                if self.progress:
                    bar.write(f"[{self.name}] step {done}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
            if tcfg.save_every and done % tcfg.save_every == 0 and done < tcfg.steps:
                self.save_checkpoint(done)
        if writer is not None:
            writer.close()
        self.raw_task.load_state_dict(self.ema.ema_model.state_dict())
        return self.history

    def save_checkpoint(self, step: int) -> None:
        """Weights (safetensors), optimiser state and step under ``log_dir/checkpoint`` (written atomically)."""
        if not self.accelerator.is_main_process:
            return
        ckpt = self.log_dir / "checkpoint"
        ckpt.mkdir(parents=True, exist_ok=True)
        save_safetensors(self.accelerator.unwrap_model(self.task).state_dict(), ckpt / "model.safetensors")
        save_safetensors(self.ema.ema_model.state_dict(), ckpt / "ema.safetensors")
        tmp = ckpt / "optimizer.pt.tmp"
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}, tmp)
        tmp.replace(ckpt / "optimizer.pt")
        atomic_write_text(ckpt / "state.json", json.dumps({"step": step}))

    def load_checkpoint(self, ckpt: str | Path | None = None) -> int:
        """Restore what :meth:`save_checkpoint` wrote (default ``log_dir/checkpoint``): weights and buffers of the
        task and its EMA, optimiser and LR scheduler. Returns the step to pass to ``fit(start_step=...)``."""
        ckpt = Path(ckpt) if ckpt is not None else self.log_dir / "checkpoint"
        state_file = ckpt / "state.json"
        if not state_file.is_file():
            raise FileNotFoundError(f"no checkpoint to resume from: {state_file} is missing")
        self.accelerator.unwrap_model(self.task).load_state_dict(load_safetensors(ckpt / "model.safetensors"))
        self.ema.ema_model.load_state_dict(load_safetensors(ckpt / "ema.safetensors"))
        opt = torch.load(ckpt / "optimizer.pt", map_location=self.device, weights_only=True)  # written by us
        self.optimizer.load_state_dict(opt["optimizer"])
        self.scheduler.load_state_dict(opt["scheduler"])
        step = int(json.loads(state_file.read_text())["step"])
        self.ema.step.fill_(step)
        self.ema.initted.fill_(True)
        return step


def infinite_batches(dataset_len: int, batch_size: int, make_batch: Callable, seed: int) -> Iterator[dict]:
    """Epochs of seeded random permutations, cut into full batches (an epoch's remainder is dropped):
    yields ``make_batch(indices)`` forever."""
    if dataset_len < 1:
        raise ValueError("cannot train on an empty dataset")
    generator = torch.Generator().manual_seed(seed)
    size = min(batch_size, dataset_len)
    while True:
        perm = torch.randperm(dataset_len, generator=generator)
        for i in range(0, dataset_len - size + 1, size):
            yield make_batch(perm[i : i + size])
