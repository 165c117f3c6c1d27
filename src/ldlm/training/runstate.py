"""Run-level bookkeeping for ``ldlm train ... --resume``: finished stages are skipped, outputs come from rank 0.

A recipe runs its stages through :meth:`RunStages.run`. When a stage returns, its model state (everything but
the frozen encoder's weights), its summary entries and every process's RNG state are saved as a checksummed
snapshot under ``run_dir/stages/<stage>/``. On ``--resume`` a stage with a valid snapshot is not run again:
the model and RNGs are restored from it, so the next stage starts exactly as it did in the first run; the
stage that was interrupted continues from its own latest checkpoint (see :class:`ldlm.training.train.Trainer`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING

from ldlm.config import ConfigError
from ldlm.storage.io import atomic_write_json
from ldlm.storage.provenance import code_revision
from ldlm.training import distributed
from ldlm.training.checkpoint import CheckpointError, read_checkpoint, write_checkpoint
from ldlm.training.rng import capture_all_ranks, restore_this_rank

if TYPE_CHECKING:
    from ldlm.config import RunConfig
    from ldlm.pipeline import LatentDiffusionLM

log = logging.getLogger(__name__)

_RESUME: ContextVar[bool] = ContextVar("ldlm_resume", default=False)


def resume_requested() -> bool:
    """Whether Trainers created now should continue from their latest checkpoint (set by :func:`resuming`)."""
    return _RESUME.get()


@contextlib.contextmanager
def resuming(flag: bool = True) -> Iterator[None]:
    token = _RESUME.set(flag)
    try:
        yield
    finally:
        _RESUME.reset(token)


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


class RunStages:
    """Stages of one run in ``cfg.run_dir``; ``resume=False`` forgets the snapshots of an earlier run there."""

    def __init__(self, cfg: RunConfig, *, resume: bool = False):
        distributed.init()
        self.code = code_revision()  # read now, not at the end: the commit whose code this process is running
        self.cfg, self.resume = cfg, resume
        self.run_dir, self.dir = cfg.run_dir, cfg.run_dir / "stages"
        if distributed.is_main():
            if self.run_dir.exists() and not self.run_dir.is_dir():
                raise ConfigError(f"output_dir={str(self.run_dir)!r} is a file; name a directory (new or a run's)")
            self.run_dir.mkdir(parents=True, exist_ok=True)
            config_file = self.run_dir / "config.json"
            if resume and config_file.is_file():
                changed = _differences(json.loads(config_file.read_text()), json.loads(json.dumps(cfg.to_dict())))
                if changed:
                    log.warning("resuming with a changed config (not an exact resume): %s", "; ".join(changed))
            if not resume:
                shutil.rmtree(self.dir, ignore_errors=True)
            atomic_write_json(config_file, cfg.to_dict())  # the resolved config, for reproduction
        distributed.barrier()

    def run(self, name: str, model: LatentDiffusionLM, fn: Callable[[], dict], *, fresh: tuple[str, ...] = ()) -> dict:
        """``fn()`` (its Trainers resume when ``resume``), or the saved result of an already finished stage.

        ``fresh``: state-dict key prefixes that a later stage rebuilds with new weights; a finished stage's snapshot
        is restored without them, so their shape may have changed since (a deeper token decoder, LDLM App. B.2).
        """
        done = self._restore(name, model, fresh) if self.resume else None
        if done is not None:
            log.info("stage %r finished in an earlier run: restored from %s, not trained again", name, self.dir / name)
            return done
        with resuming(self.resume):
            info = fn()
        rng_tensors, rng_scalars = capture_all_ranks()  # collective
        if distributed.is_main():
            parts = {"model": model.trained_state_dict(), "rng": rng_tensors}
            write_checkpoint(self.dir / name, parts, {"stage": name, "info": info, "rng": rng_scalars})
        distributed.barrier()
        return info

    def _restore(self, name: str, model: LatentDiffusionLM, fresh: tuple[str, ...] = ()) -> dict | None:
        path = self.dir / name
        if not path.is_dir():
            return None
        try:
            state, parts = read_checkpoint(path)
        except CheckpointError as err:
            log.warning("stage %r: its snapshot is unusable (%s): running the stage again", name, err)
            return None
        kept = {k: v for k, v in parts["model"].items() if not k.startswith(fresh)}
        missing, unexpected = model.load_state_dict(kept, strict=False)
        missing = [k for k in missing if not k.startswith(("encoder.model.", *fresh))]
        if missing or unexpected:
            raise CheckpointError(f"{path} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        restore_this_rank(parts["rng"], state["rng"])
        return state["info"]

    def finish(self, model: LatentDiffusionLM, summary: dict) -> dict:
        """The run's end: finite floats of ``summary`` rounded to 5 digits, then :meth:`save_outputs`; returns the
        rounded summary."""
        summary = {k: (round(v, 5) if isinstance(v, float) and math.isfinite(v) else v) for k, v in summary.items()}
        summary["code"] = self.code  # which commit trained it: a stale run is told from a current one
        self.save_outputs(model, summary)
        return summary

    def save_outputs(self, model: LatentDiffusionLM, summary: dict) -> None:
        """``run_dir/summary.json`` and ``run_dir/model`` (whose card reads that summary), written by rank 0 only."""
        if distributed.is_main():
            atomic_write_json(self.run_dir / "summary.json", summary)
            model.save_pretrained(self.run_dir / "model")
        distributed.barrier()
