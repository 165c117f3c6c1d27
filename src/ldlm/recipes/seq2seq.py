"""Seq2seq latent diffusion (COSMOS App. C.1): a frozen autoencoder, then a source-conditioned denoiser.

Stage 1 is either ``seq2seq.init_from`` (an unconditional COSMOS or LDLM model: its autoencoder, statistics and
denoiser are copied, only the conditioning layers start fresh) or the COSMOS stages on the pairs (autoencoder on
targets + sources, unconditional diffusion on targets when ``diffusion_train.steps > 0``). Stage ``seq2seq`` trains
the denoiser with cross-attention to the source latents. ``train_seq2seq(cfg)`` saves a :class:`LatentDiffusionLM`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from ldlm.config import ConfigError, RunConfig, config_from_dict
from ldlm.data.pairs import PairSet, load_pairs, split_pairs
from ldlm.data.texts import RunTexts
from ldlm.model.source_latents import encode_sources
from ldlm.objectives.diffusion import DiffusionTask, encode_latents, fit_latent_stats, validation_diffusion_loss
from ldlm.pipeline import CONFIG_NAME, LatentDiffusionLM, pretrained_dir
from ldlm.recipes.stages import train_autoencoder, train_diffusion
from ldlm.storage.io import WeightFileError
from ldlm.training.runstate import RunStages
from ldlm.training.train import Trainer, infinite_batches

log = logging.getLogger(__name__)

VALID_LIMIT = 512  # held-out pairs in the validation loss


def load_seq2seq_data(cfg: RunConfig) -> tuple[PairSet, PairSet]:
    """(train, held-out) pairs of ``data.dataset``: a seeded split by ``data.seed``; held-out texts never train."""
    dc, s2s = cfg.data, cfg.seq2seq
    pairs = load_pairs(
        dc.dataset,
        source_template=s2s.source_template,
        target_field=s2s.target_field,
        max_pairs=dc.max_texts,
        seed=dc.seed,
    )
    size = int(dc.validation_size) if dc.validation_size >= 1 else dc.validation_size
    return split_pairs(pairs, size, dc.seed)


def init_from_unconditional(model: LatentDiffusionLM, path: str | Path) -> list[str]:
    """Copy every tensor of the saved model at ``path`` (a directory or a hub id ``owner/name``) into ``model``;
    returns the names left freshly initialised (the conditioning layers). Encoder and
    shapes must match, else a WeightFileError says what differs."""
    try:
        base_dir = pretrained_dir(path)  # a local directory, or the snapshot of a hub id owner/name
    except WeightFileError as err:
        raise WeightFileError(f"seq2seq.init_from={str(path)!r}: {err}") from err
    try:
        base_cfg = config_from_dict(json.loads((base_dir / CONFIG_NAME).read_text()))
    except (json.JSONDecodeError, ConfigError) as err:
        raise WeightFileError(f"{base_dir / CONFIG_NAME} is not a valid ldlm config: {err}") from err
    checked = {"encoder": ("name", "layer", "max_length"), "autoencoder": ("num_latents", "width", "latent_dim")}
    pairs = {
        f"{section}.{key}": (getattr(getattr(base_cfg, section), key), getattr(getattr(model.cfg, section), key))
        for section, keys in checked.items()
        for key in keys
    }
    differ = [f"{name}: {a!r} (base) vs {b!r}" for name, (a, b) in pairs.items() if a != b]
    if differ:
        raise WeightFileError(f"seq2seq.init_from={str(path)!r} does not fit this config: {'; '.join(differ)}")
    base = LatentDiffusionLM.from_pretrained(base_dir)
    try:
        missing, unexpected = model.load_state_dict(base.trained_state_dict(), strict=False)
    except RuntimeError as err:  # shape mismatches: the diffusion/autoencoder sections differ
        raise WeightFileError(
            f"seq2seq.init_from={str(path)!r}: copy its autoencoder and diffusion settings into this config ({err})"
        ) from err
    if unexpected:
        raise WeightFileError(f"seq2seq.init_from={str(path)!r} has tensors this model lacks: {unexpected[:5]}")
    fresh = [k for k in missing if not k.startswith("encoder.model.")]
    log.info("initialised from %s; %d tensors start fresh: %s", base_dir, len(fresh), ", ".join(fresh))
    return fresh


def train_conditional(
    model: LatentDiffusionLM, train: PairSet, valid: PairSet, cfg: RunConfig, run_dir: Path, *, fit_stats: bool,
    progress: bool = True,
) -> dict:  # fmt: skip
    """Stage ``seq2seq``: the denoiser learns x0 of target latents with cross-attention to source latents."""
    start = time.perf_counter()
    model.eval()
    cache = cfg.data.cache_features
    z_train = encode_latents(model, train.targets, cache=cache)
    z_valid = encode_latents(model, valid.targets[:VALID_LIMIT], cache=cache)
    if fit_stats:  # no unconditional stage fitted them
        fit_latent_stats(model, z_valid if z_valid.shape[0] >= 64 else z_train)
    z_train = model.normalize_latents(z_train.to(model.device)).cpu()
    z_valid = model.normalize_latents(z_valid.to(model.device)).cpu()
    src, src_mask = (t.cpu() for t in encode_sources(model, train.sources))
    valid_source = tuple(t.cpu() for t in encode_sources(model, valid.sources[:VALID_LIMIT]))
    encode_minutes = (time.perf_counter() - start) / 60
    tc = cfg.seq2seq_train
    task = DiffusionTask(model, cfg.seed, condition_dropout=cfg.seq2seq.condition_dropout)
    trainer = Trainer(task, tc, log_dir=run_dir / "seq2seq", name="seq2seq", progress=progress)
    eval_fn = lambda task: validation_diffusion_loss(task.denoiser, model.schedule, z_valid, source=valid_source)
    make = lambda idx: {"z": z_train[idx], "src": src[idx], "src_mask": src_mask[idx]}
    trainer.fit(infinite_batches(len(z_train), tc.batch_size, make, cfg.seed), eval_fn)
    model.eval()
    return {
        "seq2seq_minutes": (time.perf_counter() - start) / 60,
        "seq2seq_encode_minutes": encode_minutes,
        "val_seq2seq_loss": validation_diffusion_loss(model.denoiser, model.schedule, z_valid, source=valid_source)[
            "loss"
        ],
        "val_seq2seq_loss_without_source": validation_diffusion_loss(model.denoiser, model.schedule, z_valid)["loss"],
    }


def train_seq2seq(
    cfg: RunConfig, *, progress: bool = True, model: LatentDiffusionLM | None = None, resume: bool = False
) -> tuple:
    """Stage 1 (init_from, or the COSMOS stages on the pairs), then the conditional stage; saves ``run_dir/model``."""
    run_dir = cfg.run_dir
    stages = RunStages(cfg, resume=resume)
    torch.manual_seed(cfg.seed)
    train, valid = load_seq2seq_data(cfg)
    model = model or LatentDiffusionLM(cfg)
    summary: dict = {"name": cfg.name, "train_pairs": len(train), "valid_pairs": len(valid)}
    s2s = cfg.seq2seq
    if s2s.init_from:
        fresh = lambda: init_from_unconditional(model, s2s.init_from)
        summary.update(stages.run("init", model, lambda: {"init_from": s2s.init_from, "fresh_parameters": fresh()}))
    else:
        data = RunTexts(train=train.targets, valid=valid.targets, extra=train.sources)
        summary.update(stages.run("autoencoder", model, lambda: train_autoencoder(model, data, cfg, run_dir, progress)))
        if cfg.diffusion_train.steps:  # the unconditional model the conditional one starts from
            summary.update(stages.run("diffusion", model, lambda: train_diffusion(model, data, cfg, run_dir, progress)))
        else:
            log.warning("diffusion_train.steps=0 and no seq2seq.init_from: the conditional denoiser starts untrained")
    fit_stats = not s2s.init_from and not cfg.diffusion_train.steps
    conditional = lambda: train_conditional(model, train, valid, cfg, run_dir, fit_stats=fit_stats, progress=progress)
    summary.update(stages.run("seq2seq", model, conditional))
    stage_minutes = ("autoencoder_minutes", "diffusion_minutes", "seq2seq_minutes")
    summary["train_minutes"] = sum(summary.get(k, 0.0) for k in stage_minutes)
    return model, stages.finish(model, summary)
