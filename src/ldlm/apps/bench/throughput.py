"""Training throughput (samples/s) and peak memory of each recipe's stages: short real runs of a preset's shapes.

Each row trains one stage with its own task and the real :class:`~ldlm.training.train.Trainer` (AdamW, clipping, EMA,
the autocast rule) on the preset's batch size for ``warmup + steps`` optimiser steps that start at the middle
of the stage (``at_step``), so that step-dependent switches (augmentations, a frozen head, the encoder warmup)
are as the full run has them there; samples/s counts the ``steps`` after the warm-up. Inputs are the preset's
dataset texts, with the frozen-encoder features read from the feature cache or E_h run on every batch; the
diffusion stage reads standard-normal latents of its shape (its real input, the frozen autoencoder's
standardised latents, costs the same). Peak memory is the process's peak RSS over the row's training loop
(reset before it, see :mod:`ldlm.training.memory`) and, on CUDA, torch's peak allocated memory.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Iterator

import torch

from ldlm.config import RunConfig, load_config
from ldlm.pipeline import LatentDiffusionLM
from ldlm.training.accel import cuda_sync
from ldlm.training.memory import reset_peak_rss, status_gib

FAR = 10**9  # "never" for log_every / eval_every inside a measured run


@dataclasses.dataclass(frozen=True)
class StageRun:
    """One measured row: a preset's stage, with the feature cache on/off (None: the stage reads no features)."""

    recipe: str
    stage: str  # autoencoder | diffusion | joint
    preset: str
    cached: bool | None

    @property
    def name(self) -> str:
        cache = "" if self.cached is None else ("_cached" if self.cached else "_uncached")
        return f"{self.recipe}_{self.stage}{cache}"


def stage_runs(cosmos_preset: str, ldlm_preset: str) -> list[StageRun]:
    """COSMOS stage 1 with/without the cache, COSMOS stage 2, the LDLM joint stage with/without the cache."""
    return [
        StageRun("cosmos", "autoencoder", cosmos_preset, True),
        StageRun("cosmos", "autoencoder", cosmos_preset, False),
        StageRun("cosmos", "diffusion", cosmos_preset, None),
        StageRun("ldlm", "joint", ldlm_preset, True),
        StageRun("ldlm", "joint", ldlm_preset, False),
    ]


def stamped(batches: Iterator, stamps: list[float]) -> Iterator:
    """Yield ``batches``, appending ``perf_counter()`` before each is built: micro-batch k starts at stamps[k]
    (on CUDA after the queued kernels of the steps before it have finished)."""
    while True:
        cuda_sync()
        stamps.append(time.perf_counter())
        yield next(batches)


def _texts(cfg: RunConfig, rows: int) -> list[str]:
    """``rows`` texts of the preset's dataset (packed into fewer chunks, the batches cycle through them)."""
    from ldlm.data import load_texts

    dc = cfg.data
    return load_texts(dc.dataset, max_texts=rows, field=dc.text_field, seed=dc.seed)


def _task_and_batches(run: StageRun, model: LatentDiffusionLM, cfg: RunConfig, rows: int, batch_size: int):
    """(task, BatchStream over ``rows`` rows, feature source or None): features cached or not, as ``run`` asks."""
    from ldlm.data.sources import FeatureSource, feature_source
    from ldlm.objectives.autoencoder import AutoencoderTask
    from ldlm.objectives.diffusion import DiffusionTask
    from ldlm.objectives.joint import JointTask
    from ldlm.training.train import infinite_batches

    if run.stage == "diffusion":
        z = torch.randn(rows, *model.latent_shape, generator=torch.Generator().manual_seed(cfg.seed))
        stream = infinite_batches(rows, batch_size, lambda i: {"z": z[i]}, cfg.seed)
        return DiffusionTask(model, cfg.seed), stream, None
    if run.stage == "autoencoder":
        source = FeatureSource(model, _texts(cfg, rows), cfg.data.cache_features)
        return AutoencoderTask(model, cfg.seed), source.batches(batch_size, cfg.seed), source
    if run.stage == "joint":
        source = feature_source(model, _texts(cfg, rows), cfg.data)
        return JointTask(model, cfg, cfg.seed), source.batches(batch_size, cfg.seed), source
    raise ValueError(f"stage={run.stage!r} is unknown: use autoencoder | diffusion | joint")


def _model(run: StageRun, encoders: dict) -> tuple[RunConfig, LatentDiffusionLM]:
    """The preset's config (feature cache as ``run`` asks) and a fresh model on a shared frozen encoder."""
    from ldlm.model.encoders import build_encoder

    overrides = [] if run.cached is None else [f"data.cache_features={str(run.cached).lower()}"]
    cfg = load_config(run.preset, overrides)
    key = (cfg.encoder.name, cfg.encoder.layer, cfg.encoder.kind)
    if key not in encoders:  # loaded once per bench, shared by the rows of a preset
        encoders[key] = build_encoder(cfg.encoder)
    return cfg, LatentDiffusionLM(cfg, encoder=encoders[key])


def _fit_feature_stats(model: LatentDiffusionLM, source, rows: int = 256) -> None:
    """Feature statistics of a fresh encoder, as the recipes fit them (untimed; shared encoders keep them)."""
    from ldlm.data.sources import fit_feature_stats

    encoder = model.encoder
    if source is None or not ((encoder.mean == 0).all() and (encoder.std == 1).all()):
        return
    fit_feature_stats(model, source, rows)


def timed_fit(trainer, stream, start: int, stamps: list[float]) -> tuple[float | None, float | None]:
    """Run ``trainer`` from step ``start``, stamping each micro-batch; (RSS before, peak RSS during) in GiB."""
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    reset = reset_peak_rss()
    before = status_gib("VmRSS")
    trainer.fit(stamped(stream, stamps), start_step=start)
    return before, (status_gib("VmHWM") if reset else None)


def measure_stage(run: StageRun, *, warmup: int, steps: int, encoders: dict) -> dict:
    """Train ``run`` for ``warmup + steps`` steps from the middle of its stage; samples/s and peak memory."""
    from ldlm.training.train import Trainer

    cfg, model = _model(run, encoders)
    stage = getattr(cfg, f"{run.stage}_train")
    at = stage.steps // 2
    tc = dataclasses.replace(stage, steps=at + warmup + steps + 1, log_every=FAR, eval_every=FAR, save_every=0)
    task, stream, source = _task_and_batches(run, model, cfg, tc.batch_size * (warmup + steps + 1), tc.batch_size)
    _fit_feature_stats(model, source)
    stream.shard(rank=0, world=1, accum=tc.grad_accum)
    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as log_dir:
        trainer = Trainer(task, tc, log_dir=log_dir, name=run.stage, progress=False, resume=False)
        model.to(trainer.device)
        before, peak = timed_fit(trainer, stream, at, stamps)
    seconds = stamps[(warmup + steps) * tc.grad_accum] - stamps[warmup * tc.grad_accum]
    row = {
        "name": run.name,
        "recipe": run.recipe,
        "stage": run.stage,
        "preset": run.preset,
        "feature_cache": run.cached,
        "batch_size": stream.batch_size,  # the preset's, unless the rows were fewer
        "at_step": at,
        "warmup_steps": warmup,
        "steps": steps,
        "step_seconds": seconds / steps,
        "samples_per_s": stream.batch_size * steps / seconds,
        "rss_before_gib": before,
        "peak_rss_gib": peak,
    }
    if trainer.device.type == "cuda":
        row["cuda_peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return row


def bench_training(cosmos_preset: str, ldlm_preset: str, *, warmup: int, steps: int) -> dict:
    """All rows of :func:`stage_runs`, plus the feature-cache speed-up of each stage that reads features."""
    encoders: dict = {}
    runs = stage_runs(cosmos_preset, ldlm_preset)
    rows = [measure_stage(run, warmup=warmup, steps=steps, encoders=encoders) for run in runs]
    by_name = {row["name"]: row for row in rows}
    speedup = {
        f"{recipe}_{stage}": by_name[f"{recipe}_{stage}_uncached"]["step_seconds"]
        / by_name[f"{recipe}_{stage}_cached"]["step_seconds"]
        for recipe, stage in (("cosmos", "autoencoder"), ("ldlm", "joint"))
    }
    return {"rows": rows, "feature_cache_speedup": speedup}
