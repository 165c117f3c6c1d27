"""Training checkpoints on disk: atomic, checksummed, the last K kept, corrupt ones skipped with a report.

Layout: ``<log_dir>/checkpoints/step_00001000/`` holding ``<part>.safetensors`` files (model, EMA, optimiser
tensors, RNG states) and ``state.json`` (step, optimiser/scheduler scalars, RNG scalars, and the size and
sha256 of every other file). A checkpoint is built in a temporary directory and renamed into place, so a
killed writer leaves no half-checkpoint under a final name; a file damaged later (truncated, bit flip) fails
its checksum or safetensors header, is reported, and the previous checkpoint is used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path

import torch

from ldlm.storage.io import WeightFileError, atomic_directory, atomic_write_json, load_safetensors, save_safetensors

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_NAME = re.compile(r"^step_(\d{8,})$")


class CheckpointError(ValueError):
    """A checkpoint is incomplete or damaged (the message names the file and the reason)."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def list_checkpoints(root: Path) -> list[Path]:
    """Complete-looking checkpoint directories under ``root``, newest (highest step) first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)), reverse=True)


def write_checkpoint(path: Path, parts: dict[str, dict[str, torch.Tensor]], state: dict) -> Path:
    """Write ``parts`` (one safetensors file each) and ``state`` (+ checksums) as the directory ``path``, atomically."""
    with atomic_directory(path) as tmp:
        for name, tensors in parts.items():
            save_safetensors(tensors, tmp / f"{name}.safetensors")
        files = {f.name: {"bytes": f.stat().st_size, "sha256": sha256_file(f)} for f in sorted(tmp.iterdir())}
        atomic_write_json(tmp / "state.json", {"format_version": FORMAT_VERSION, **state, "files": files})
    return path


def step_path(root: Path, step: int) -> Path:
    return root / f"step_{step:08d}"


def prune_checkpoints(root: Path, keep: int) -> None:
    """Keep the newest ``keep`` checkpoints under ``root``; remove temporary directories of killed writers."""
    for old in list_checkpoints(root)[max(1, keep) :]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".step_*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)


def read_checkpoint(path: Path) -> tuple[dict, dict[str, dict[str, torch.Tensor]]]:
    """(state, parts) of one checkpoint after checking every file's size and sha256; raises CheckpointError."""
    try:
        state = json.loads((path / "state.json").read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path / 'state.json'} is missing or unreadable ({err})") from err
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has format {state.get('format_version')}, expected {FORMAT_VERSION}")
    parts = {}
    for name, meta in state["files"].items():
        file = path / name
        size = file.stat().st_size if file.is_file() else None
        if size != meta["bytes"]:
            raise CheckpointError(f"{file} has {size} bytes, {meta['bytes']} were written: truncated or missing")
        if sha256_file(file) != meta["sha256"]:
            raise CheckpointError(f"{file} fails its sha256 checksum: the file was modified or damaged")
        try:
            parts[file.name.removesuffix(".safetensors")] = load_safetensors(file)
        except WeightFileError as err:
            raise CheckpointError(str(err)) from err
    return state, parts


def latest_checkpoint(root: Path) -> tuple[Path, dict, dict[str, dict[str, torch.Tensor]]] | None:
    """The newest checkpoint under ``root`` that verifies, reporting each damaged one skipped; None if none."""
    for path in list_checkpoints(root):
        try:
            return (path, *read_checkpoint(path))
        except CheckpointError as err:
            log.warning("checkpoint %s is unusable (%s): falling back to the previous one", path.name, err)
    return None


def load_ema_weights(model: torch.nn.Module, path: Path) -> int:
    """Load the EMA weights of a training checkpoint (``<stage>/checkpoints/step_N``) into ``model``: every entry
    of the checkpoint's task whose name and shape match one of the model's (a task holds model parts under the
    same names, e.g. ``denoiser.*``). Returns how many tensors were loaded; none is a CheckpointError."""
    _, parts = read_checkpoint(Path(path))
    own = model.state_dict()
    matched = {k: v for k, v in parts["ema"].items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise CheckpointError(f"{path}: none of its {len(parts['ema'])} tensors fits this model (another run's?)")
    model.load_state_dict(matched, strict=False)
    return len(matched)


# --------------------------------------------------------------------------------------- optimiser state


def split_optimizer_state(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """``optimizer.state_dict()`` -> (tensors named ``<param id>.<field>``, JSON-able rest)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for pid, fields in state["state"].items():
        for key, value in fields.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def join_optimizer_state(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    """Inverse of :func:`split_optimizer_state` (tuples such as ``betas`` come back as tuples)."""
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for pid, fields in rest["scalars"].items():
        state.setdefault(int(pid), {}).update(fields)
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in rest["param_groups"]]
    return {"state": state, "param_groups": groups}
