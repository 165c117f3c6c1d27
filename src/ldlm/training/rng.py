"""Random-number-generator state as tensors + JSON (no pickle): torch (CPU, CUDA), named ``torch.Generator``s,
numpy's and Python's global generators. Captured into checkpoints so that a resumed run draws the same noise.
"""

from __future__ import annotations

import logging
import random

import numpy as np
import torch
from torch import nn

from ldlm.training import distributed

log = logging.getLogger(__name__)


def find_generators(module: nn.Module) -> dict[str, torch.Generator]:
    """The ``torch.Generator`` attributes of ``module`` and its submodules, by dotted name (``task.generator``)."""
    found: dict[str, torch.Generator] = {}
    for prefix, sub in module.named_modules():
        for attr, value in vars(sub).items():
            if isinstance(value, torch.Generator):
                found[f"{prefix}.{attr}" if prefix else attr] = value
    return found


def capture_rng(generators: dict[str, torch.Generator] | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, json) of every global generator and the named ``generators``."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda{i}"] = state
    for name, gen in (generators or {}).items():
        tensors[f"generator.{name}"] = gen.get_state()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, py_state, gauss_next = random.getstate()
    scalars = {
        "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "state": list(py_state), "gauss_next": gauss_next},
    }
    return tensors, scalars


def restore_rng(
    tensors: dict[str, torch.Tensor], scalars: dict, generators: dict[str, torch.Generator] | None = None
) -> list[str]:
    """Set every generator captured by :func:`capture_rng`; returns the names of ``generators`` not found."""
    torch.set_rng_state(tensors["torch_cpu"].to(torch.uint8))
    if torch.cuda.is_available():
        states = [tensors[k].to(torch.uint8) for k in sorted(tensors) if k.startswith("torch_cuda")]
        if states:
            torch.cuda.set_rng_state_all(states[: torch.cuda.device_count()])
    missing = []
    for name, gen in (generators or {}).items():
        key = f"generator.{name}"
        if key in tensors:
            gen.set_state(tensors[key].to(torch.uint8))
        else:
            missing.append(name)
    n = scalars["numpy"]
    keys = tensors["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = scalars["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    return missing


def capture_all_ranks(generators: dict[str, torch.Generator] | None = None) -> tuple[dict[str, torch.Tensor], list]:
    """Every process's RNG state (collective): tensors named ``rank<r>.<name>`` and one JSON entry per rank."""
    gathered = distributed.gather_objects(capture_rng(generators))
    tensors = {f"rank{r}.{k}": v for r, (t, _) in enumerate(gathered) for k, v in t.items()}
    return tensors, [s for _, s in gathered]


def restore_this_rank(
    tensors: dict[str, torch.Tensor], scalars: list, generators: dict[str, torch.Generator] | None = None
) -> None:
    """Restore this process's entry of :func:`capture_all_ranks` (another rank's, with a warning, if the number
    of processes grew: the run then continues correctly but not bit-identically)."""
    r = distributed.rank()
    if r >= len(scalars):
        log.warning("RNG state saved by %d processes, this is process %d: reusing process %d's", len(scalars), r, 0)
        r = 0
    prefix = f"rank{r}."
    own = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
    missing = restore_rng(own, scalars[r], generators)
    if missing:
        log.warning("no saved RNG state for generator(s) %s: they continue from their seed", ", ".join(missing))
