"""One training loop for every stage and recipe, on Accelerate (one process, or many under torchrun).

A *task* is an ``nn.Module`` whose ``forward(batch, step)`` returns ``(loss, metrics)``; the loop owns
the rest: device placement and DDP, bf16 autocast on GPU (fp32 on CPU), gradient accumulation, AdamW with
linear warmup then constant/cosine LR, gradient clipping, EMA of the weights (``ema-pytorch``), periodic
validation, a guard against non-finite losses, checkpoints and exact resume, a progress bar, TensorBoard
and a ``metrics.jsonl`` log (metrics averaged over processes; only rank 0 writes files). ``train.compile``
compiles the task's ``denoiser`` with ``torch.compile`` on GPU (see :mod:`ldlm.training.accel`).
Buffers of the task (e.g. the adaptive timestep sampler's state) are copied into the EMA model, not averaged.

Exact resume: a checkpoint holds the task's weights and buffers, the EMA, the optimiser and LR scheduler, the
RNG states of every process (global ones and the task's ``torch.Generator`` attributes), the step (which is
the data position of a :class:`~ldlm.data.batches.BatchStream`) and the metrics accumulated since the last log
row; resuming from it reproduces the uninterrupted run bit for bit on the same hardware and process count.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from ldlm.config import TrainConfig
from ldlm.data.batches import BatchStream
from ldlm.storage.io import atomic_write_text
from ldlm.training import distributed
from ldlm.training.accel import compile_denoiser
from ldlm.training.checkpoint import (
    join_optimizer_state,
    latest_checkpoint,
    prune_checkpoints,
    read_checkpoint,
    split_optimizer_state,
    step_path,
    write_checkpoint,
)
from ldlm.training.rng import capture_all_ranks, find_generators, restore_this_rank
from ldlm.training.runstate import resume_requested

log = logging.getLogger(__name__)

RANK_SEED_STRIDE = 1_000_003  # process r re-seeds the task's generators with seed + r * stride: distinct noise


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


def adamw(groups: list[dict], **kwargs) -> torch.optim.AdamW:
    """AdamW with the fused kernel where this torch has one for the parameters' device (one kernel for all
    tensors: ~4x faster than ``foreach`` on one CPU core, where the step was ~22% of a 15M-parameter joint
    step), else ``foreach``. Same update rule; results differ only in float rounding."""
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, ValueError, TypeError):  # no fused kernel for this device/dtype/torch
        return torch.optim.AdamW(groups, foreach=True, **kwargs)


class Trainer:
    """Optimises ``task`` (its parameters with ``requires_grad``) for ``tcfg.steps`` steps.

    ``resume``: continue from the newest valid checkpoint in ``log_dir/checkpoints`` when :meth:`fit` starts
    (default: whether the recipe runs under ``--resume``, see :mod:`ldlm.training.runstate`).
    """

    def __init__(
        self,
        task: nn.Module,
        tcfg: TrainConfig,
        *,
        log_dir: str | Path,
        name: str,
        progress: bool = True,
        resume: bool | None = None,
    ):
        from accelerate import Accelerator, DistributedDataParallelKwargs
        from ema_pytorch import EMA

        self.tcfg, self.name, self.progress = tcfg, name, progress
        self.resume = resume_requested() if resume is None else resume
        self.log_dir = Path(log_dir)
        self.accelerator = Accelerator(
            mixed_precision=mixed_precision_for(tcfg.mixed_precision),
            cpu=not torch.cuda.is_available(),
            # some parameters get no gradient on some steps (a head frozen for the first steps): DDP must allow it
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        if self.accelerator.distributed_type.name == "FSDP":
            log.warning("%s: FSDP is untested here; the EMA and checkpoints assume unsharded parameters", name)
        params = [p for p in task.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"stage {name!r} has no trainable parameters")
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]  # biases, norms: no weight decay
        optimizer = adamw(
            [{"params": decay, "weight_decay": tcfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=tcfg.lr,
            betas=tcfg.betas,
            eps=tcfg.eps,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(tcfg))
        self.task, self.optimizer, self.scheduler = self.accelerator.prepare(task, optimizer, scheduler)
        self.raw_task = task
        self.generators = find_generators(task)  # the task's noise sources: checkpointed, distinct per process
        if self.world > 1:
            for gen in self.generators.values():
                gen.manual_seed(gen.initial_seed() + RANK_SEED_STRIDE * self.rank)
        buffers = {name for name, _ in task.named_buffers()}  # running state (sampler statistics): copy, not average
        self.ema = EMA(
            task,
            beta=tcfg.ema_decay,
            update_after_step=tcfg.ema_update_after,
            update_every=1,
            param_or_buffer_names_no_ema=buffers,
        )
        self.ema.to(self.accelerator.device)
        # <stage>_train.compile: after the EMA's deep copy, so the averaged model (evaluation only) stays eager
        denoiser = getattr(task, "denoiser", None)
        compile_denoiser(denoiser, enabled=tcfg.compile, device=self.device, field=f"{name}_train.compile")
        self.history: list[dict] = []
        self._sums: dict[str, float] = {}  # metrics since the last log row, summed over micro-batches
        self._count = 0

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def checkpoint_dir(self) -> Path:
        return self.log_dir / "checkpoints"

    # ------------------------------------------------------------------ logging

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

    def _averaged_metrics(self) -> dict[str, float]:
        """Mean of each metric over the micro-batches since the last row, and over processes."""
        keys = sorted(self._sums)
        values = torch.tensor([self._sums[k] / max(1, self._count) for k in keys], dtype=torch.float64)
        if self.world > 1:
            values = self.accelerator.reduce(values.to(self.device), "mean").cpu()
        self._sums, self._count = {}, 0
        return dict(zip(keys, values.tolist(), strict=True))

    def _start_logs(self, start_step: int) -> None:
        """A fresh stage clears old logs and checkpoints; a resumed one drops log rows after ``start_step``."""
        if self.accelerator.is_main_process:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            metrics = self.log_dir / "metrics.jsonl"
            if not start_step:
                metrics.unlink(missing_ok=True)
                for old in self.checkpoint_dir.glob("step_*"):  # of an earlier run in this directory
                    shutil.rmtree(old, ignore_errors=True)
            elif metrics.is_file():
                rows = [line for line in metrics.read_text().splitlines() if line.strip()]
                kept = [line for line in rows if json.loads(line)["step"] <= start_step]
                atomic_write_text(metrics, "".join(line + "\n" for line in kept))
        distributed.barrier()

    # ------------------------------------------------------------------ one step

    def _nonfinite_anywhere(self, value: float) -> bool:
        """True if ``value`` is non-finite on any process (so that all of them skip or stop together)."""
        bad = not math.isfinite(value)
        if self.world == 1:
            return bad
        flag = torch.tensor([float(bad)], device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def _train_step(self, batches: Iterator[dict], step: int, accum: int) -> str | None:
        """One optimiser step over ``accum`` micro-batches; returns why it was not applied (non-finite) or None."""
        acc = self.accelerator
        sums: dict[str, float] = {}
        for micro in range(accum):
            last = micro == accum - 1
            with contextlib.nullcontext() if last else acc.no_sync(self.task):
                with acc.autocast():
                    loss, metrics = self.task(next(batches), step)
                value = loss.item()
                if self._nonfinite_anywhere(value):  # checked per micro-batch, before any gradient is applied
                    for _ in range(micro + 1, accum):
                        next(batches)  # the data position stays that of an applied step
                    self.optimizer.zero_grad(set_to_none=True)
                    return f"non-finite loss ({value} on this process) in micro-batch {micro}"
                acc.backward(loss / accum)
            for key, v in metrics.items():
                sums[key] = sums.get(key, 0.0) + float(v)
        if self.tcfg.grad_clip:
            norm = float(acc.clip_grad_norm_(self.task.parameters(), self.tcfg.grad_clip))
            if not math.isfinite(norm) and acc.scaler is None:  # fp16's scaler skips such steps itself
                self.optimizer.zero_grad(set_to_none=True)
                return f"non-finite gradient norm ({norm})"
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update()
        for key, v in sums.items():
            self._sums[key] = self._sums.get(key, 0.0) + v
        self._count += accum
        return None

    def _skipped(self, step: int, reason: str, writer) -> None:
        message = f"{self.name}: {reason} at step {step}"
        if self.tcfg.on_nonfinite == "stop":
            # the config key of this stage (the head pre-training runs under its autoencoder's section)
            key = f"{self.name}_train.on_nonfinite=skip"
            if self.name == "head":
                key = "autoencoder_train.on_nonfinite=skip (joint_train for recipe: ldlm)"
            raise FloatingPointError(f"{message}; nothing was updated ({key} would skip the step)")
        log.warning("%s: step skipped, weights unchanged", message)
        self.scheduler.step()  # the LR schedule follows the step count
        self._log({"step": step + 1, "skipped": reason}, writer)

    # ------------------------------------------------------------------ the loop

    def fit(
        self,
        batches: Iterator[dict],
        eval_fn: Callable[[nn.Module], dict] | None = None,
        *,
        start_step: int | None = None,
    ) -> list[dict]:
        """Run the loop; ``batches`` yields micro-batches; ``eval_fn(ema_task)`` returns validation metrics.

        A :class:`BatchStream` (``infinite_batches``) is sharded over the processes and positioned at the start
        step; other iterators are used as they are (single process only). ``start_step``: continue a run restored
        by :meth:`load_checkpoint`; None: 0, or the newest checkpoint's step when resuming.
        At the end the EMA weights are copied into the task, so the caller holds the averaged model.
        """
        from torch.utils.tensorboard import SummaryWriter
        from tqdm.auto import tqdm

        tcfg, acc = self.tcfg, self.accelerator
        if start_step is None:
            start_step = self._resume() if self.resume else 0
        accum = tcfg.grad_accum
        if isinstance(batches, BatchStream):
            _, accum = distributed.batch_layout(batches.batch_size, tcfg.grad_accum, self.world)
            batches.shard(rank=self.rank, world=self.world, accum=accum).seek(start_step)
        elif self.world > 1:
            raise ValueError("multi-process training needs a BatchStream (infinite_batches) to shard the data")
        self._start_logs(start_step)
        writer = None
        if acc.is_main_process:
            writer = SummaryWriter(str(self.log_dir / "tensorboard"), purge_step=start_step or None)
        bar = tqdm(range(start_step, tcfg.steps), desc=self.name, disable=not self.progress or not acc.is_main_process)
        start = time.perf_counter()
        for step in bar:
            self.task.train()
            reason = self._train_step(batches, step, accum)
            if reason is not None:
                self._skipped(step, reason, writer)
            done = step + 1
            last = done == tcfg.steps or self._out_of_time(start)
            if done % tcfg.log_every == 0 or last:
                metrics = self._averaged_metrics()
                elapsed = round(time.perf_counter() - start, 2)
                row = {"step": done, "lr": self.scheduler.get_last_lr()[0], "elapsed_s": elapsed}
                row.update({k: round(v, 5) for k, v in metrics.items()})
                self._log(row, writer)
                bar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items() if k in ("loss", "acc")})
            if eval_fn is not None and (done % tcfg.eval_every == 0 or last):
                with torch.no_grad():
                    metrics = eval_fn(self.ema.ema_model.eval())
                self._log({"step": done, **{f"val_{k}": v for k, v in metrics.items()}}, writer)
                if self.progress and acc.is_main_process:
                    bar.write(f"[{self.name}] step {done}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
            if tcfg.save_every and done % tcfg.save_every == 0 and not last:
                self.save_checkpoint(done)
            if last:
                break
        if writer is not None:
            writer.close()
        self.raw_task.load_state_dict(self.ema.ema_model.state_dict())
        return self.history

    def _out_of_time(self, start: float) -> bool:
        """Whether ``max_minutes`` has passed since the loop started (any process's clock stops them all)."""
        if self.tcfg.max_minutes is None:
            return False
        over = (time.perf_counter() - start) / 60 >= self.tcfg.max_minutes
        if self.world > 1:
            flag = torch.tensor(float(over), device=self.accelerator.device)
            over = bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)
        return over

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self, step: int) -> Path:
        """Everything an exact resume needs, as ``log_dir/checkpoints/step_<step>`` (collective; rank 0 writes)."""
        model = self.accelerator.get_state_dict(self.task)
        rng_tensors, rng_scalars = capture_all_ranks(self.generators)
        path = step_path(self.checkpoint_dir, step)
        if self.accelerator.is_main_process:
            opt_tensors, opt_rest = split_optimizer_state(self.optimizer.state_dict())
            state = {
                "step": step,
                "stage": self.name,
                "world_size": self.world,
                "optimizer": opt_rest,
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.accelerator.scaler.state_dict() if self.accelerator.scaler is not None else None,
                "ema": {"step": int(self.ema.step.item()), "initted": bool(self.ema.initted.item())},
                "rng": rng_scalars,
                "metrics_since_log": {"sums": self._sums, "count": self._count},
            }
            ema = self.ema.ema_model.state_dict()
            parts = {"model": model, "ema": ema, "optimizer": opt_tensors, "rng": rng_tensors}
            write_checkpoint(path, parts, state)
            prune_checkpoints(self.checkpoint_dir, self.tcfg.keep_checkpoints)
        distributed.barrier()
        return path

    def load_checkpoint(self, ckpt: str | Path | None = None) -> int:
        """Restore a checkpoint (default: the newest valid one under ``log_dir/checkpoints``, damaged ones are
        reported and skipped). Returns the step to pass to ``fit(start_step=...)``."""
        if ckpt is not None:
            state, parts = read_checkpoint(Path(ckpt))
        else:
            found = latest_checkpoint(self.checkpoint_dir)
            if found is None:
                raise FileNotFoundError(f"no checkpoint to resume from in {self.checkpoint_dir}")
            _, state, parts = found
        self.accelerator.unwrap_model(self.task).load_state_dict(parts["model"])
        self.ema.ema_model.load_state_dict(parts["ema"])
        self.optimizer.load_state_dict(join_optimizer_state(parts["optimizer"], state["optimizer"]))
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler") and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])
        self.ema.step.fill_(state["ema"]["step"])
        self.ema.initted.fill_(state["ema"]["initted"])
        if state["world_size"] != self.world:
            log.warning("%s: checkpoint of %d processes, resuming with %d", self.name, state["world_size"], self.world)
        restore_this_rank(parts["rng"], state["rng"], self.generators)
        self._sums, self._count = dict(state["metrics_since_log"]["sums"]), state["metrics_since_log"]["count"]
        return int(state["step"])

    def _resume(self) -> int:
        if not any(self.checkpoint_dir.glob("step_*")):
            log.info("%s: no checkpoint in %s, starting at step 0", self.name, self.checkpoint_dir)
            return 0
        try:
            step = self.load_checkpoint()
        except FileNotFoundError:
            log.warning("%s: no usable checkpoint in %s, starting at step 0", self.name, self.checkpoint_dir)
            return 0
        log.info("%s: resuming at step %d from %s", self.name, step, step_path(self.checkpoint_dir, step))
        return step


def infinite_batches(dataset_len: int, batch_size: int, make_batch: Callable, seed: int) -> BatchStream:
    """Epochs of seeded random permutations cut into global batches of ``batch_size`` (an epoch's remainder is
    dropped), yielding ``make_batch(indices)`` forever; :meth:`Trainer.fit` shards it over processes."""
    return BatchStream(dataset_len, batch_size, make_batch, seed)
