"""Process-group helpers: rank, world size, main-process gating and the global-batch layout.

Every recipe runs unchanged under ``torchrun`` / ``accelerate launch``: :func:`init` starts the process group
(through Accelerate's ``PartialState``), the config's ``batch_size`` stays the *global* batch and
:func:`batch_layout` derives each process's micro-batch and accumulation from it.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def launched_distributed() -> bool:
    """True when a launcher (torchrun, accelerate launch, mpirun) started several processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init() -> None:
    """Start the process group when launched with several processes (idempotent; no-op otherwise)."""
    if launched_distributed() and not dist.is_initialized():
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` in a single process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def batch_layout(global_batch: int, grad_accum: int, world: int) -> tuple[int, int]:
    """(micro_batch, accumulation) per process for a ``global_batch`` split over ``world`` processes.

    ``grad_accum`` sets the memory budget: no micro-batch is larger than ``global_batch // grad_accum`` (the
    single-process micro-batch), so one process reproduces the configured accumulation exactly and more
    processes accumulate less.
    """
    if global_batch % world:
        raise ValueError(f"the global batch {global_batch} is not divisible by {world} processes: change batch_size")
    per_device = global_batch // world
    budget = max(1, global_batch // max(1, grad_accum))
    accum = next(a for a in range(1, per_device + 1) if per_device % a == 0 and per_device // a <= budget)
    return per_device // accum, accum


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """The same-shaped ``tensor`` of every process concatenated along dim 0, in rank order (itself if alone)."""
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)
