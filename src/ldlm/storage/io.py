"""Atomic file output and safe weight loading: nothing half-written is ever passed off as complete."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def exclusive_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (an existing directory, or a lock file created if missing) while the
    block runs; a second process or open waits. Released on exit or if the holder dies. No-op where flock is missing."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    path = Path(path)
    fd = os.open(path, os.O_RDONLY) if path.is_dir() else os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextlib.contextmanager
def directory_lock(path: str | Path) -> Iterator[None]:
    """:func:`exclusive_lock` on directory ``path`` (created if missing), for a read-modify-write of files in it, so
    that two processes (two ``ldlm ablate`` jobs) never lose each other's update."""
    Path(path).mkdir(parents=True, exist_ok=True)
    with exclusive_lock(path):
        yield


def read_json(path: str | Path):
    """A JSON file's content, or None when it is missing or unreadable (for resumable bookkeeping files)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def save_safetensors(state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Save a state dict as safetensors via a temporary name (tensors made contiguous, CPU)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp))
    os.replace(tmp, path)


class WeightFileError(ValueError):
    """A weight file is missing, not safetensors, or unreadable."""


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Load weights from a ``.safetensors`` file only (never unpickle a user's file)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise WeightFileError(
            f"{path} is not a .safetensors file; ldlm loads weights only from safetensors "
            "(convert with safetensors.torch.save_file after loading it yourself with weights_only=True)"
        )
    if not path.is_file():
        raise WeightFileError(f"weight file {path} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightFileError(f"{path} is not a readable safetensors file ({err}); it may be truncated") from err


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces ``path`` in one rename, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_yaml_mapping(path: Path, error: type[Exception], expected: str) -> dict:
    """A YAML file that must hold a mapping; ``error`` (naming the file) if it is invalid YAML or not a mapping."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as err:
        raise error(f"{path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise error(f"{path} must hold a mapping of {expected}, got {type(data).__name__}")
    return data
