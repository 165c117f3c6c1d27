"""The training stages the recipes put in order; each trains one objective (:mod:`ldlm.objectives`) with
:class:`~ldlm.training.train.Trainer` and returns its summary entries.

- :func:`train_autoencoder`: COSMOS stage 1 (feature statistics, token head, E_z/D_h/D_w) - COSMOS, seq2seq
- :func:`train_diffusion`: COSMOS stage 2 on the frozen autoencoder's standardised latents - COSMOS, seq2seq
- :func:`train_joint`: LDLM's joint stage - LDLM
- :func:`train_token_decoder`: a fresh token decoder on frozen latents (LDLM App. B.2) - LDLM
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ldlm.config import RunConfig, TrainConfig
from ldlm.data.sources import FeatureSource, diffusion_sources, fit_feature_stats
from ldlm.data.texts import RunTexts
from ldlm.objectives.autoencoder import AutoencoderTask, reconstruction_accuracy
from ldlm.objectives.decoder import DecoderTask
from ldlm.objectives.diffusion import DiffusionTask, encode_latents, fit_latent_stats, validation_diffusion_loss
from ldlm.objectives.head import head_accuracy, prepare_head
from ldlm.objectives.joint import JointTask, encoder_swapped, joint_validation
from ldlm.pipeline import LatentDiffusionLM
from ldlm.training.train import Trainer, infinite_batches

log = logging.getLogger(__name__)


def train_autoencoder(
    model: LatentDiffusionLM, data: RunTexts, cfg: RunConfig, run_dir: Path, progress: bool = True
) -> dict:
    """Stage 1. Fits the feature statistics, prepares the head, trains E_z/D_h(/D_w); returns metrics."""
    start = time.perf_counter()
    train = FeatureSource(model, data.autoencoder_texts, cfg.data.cache_features)
    valid = FeatureSource(model, data.valid, cfg.data.cache_features)
    fit_feature_stats(model, train, cfg.encoder.stats_texts)
    prep_start = time.perf_counter()
    prepare_head(
        model, train, cfg.autoencoder, cfg.autoencoder_train, seed=cfg.seed, run_dir=run_dir, progress=progress
    )
    head_acc = head_accuracy(model, valid)
    log.info("token head accuracy on the true held-out features: %.4f", head_acc)
    tc = cfg.autoencoder_train
    trainer = Trainer(
        AutoencoderTask(model, cfg.seed),
        tc,
        log_dir=run_dir / "autoencoder",
        name="autoencoder",
        progress=progress,
    )
    model.to(trainer.device)
    eval_fn = lambda task: reconstruction_accuracy(model, valid, autoencoder=task.autoencoder, max_texts=256)
    trainer.fit(train.batches(tc.batch_size, cfg.seed), eval_fn)
    model.eval()
    metrics = reconstruction_accuracy(model, valid, max_texts=len(valid), true_h=True)
    return {
        "heldout_token_accuracy": metrics["acc"],
        "heldout_mse": metrics["mse"],
        "heldout_head_accuracy_true_h": metrics["acc_true_h"],
        "heldout_head_accuracy_true_h_before_autoencoder": head_acc,
        "autoencoder_texts": len(train),
        "autoencoder_minutes": (time.perf_counter() - start) / 60,
        "feature_minutes": (prep_start - start) / 60,
    }


def train_diffusion(
    model: LatentDiffusionLM, data: RunTexts, cfg: RunConfig, run_dir: Path, progress: bool = True
) -> dict:
    """Stage 2 on the frozen autoencoder's standardised latents of the training texts."""
    start = time.perf_counter()
    model.eval()
    train, valid = diffusion_sources(model, data, cfg)  # rows of the autoencoder stage's cached features
    z_train = encode_latents(model, train)
    # (when no held-out text fills the window, validate on training latents)
    z_valid = encode_latents(model, valid) if valid is not None else z_train[:512]
    fit_latent_stats(model, z_valid if z_valid.shape[0] >= 64 else z_train)
    z_train = model.normalize_latents(z_train.to(model.device)).cpu()
    z_valid = model.normalize_latents(z_valid.to(model.device)).cpu()[:512]
    tc: TrainConfig = cfg.diffusion_train
    trainer = Trainer(
        DiffusionTask(model, cfg.seed), tc, log_dir=run_dir / "diffusion", name="diffusion", progress=progress
    )
    eval_fn = lambda task: validation_diffusion_loss(task.denoiser, model.schedule, z_valid)
    batches = infinite_batches(len(z_train), tc.batch_size, lambda idx: {"z": z_train[idx]}, cfg.seed)
    trainer.fit(batches, eval_fn)
    model.eval()
    return {
        "diffusion_minutes": (time.perf_counter() - start) / 60,
        "diffusion_texts": len(train),
        "val_diffusion_loss": validation_diffusion_loss(model.denoiser, model.schedule, z_valid)["loss"],
    }


def train_joint(
    model: LatentDiffusionLM,
    train: FeatureSource,
    valid: FeatureSource,
    cfg: RunConfig,
    run_dir: Path,
    progress: bool = True,
) -> dict:
    """The joint stage; returns its wall time. The model ends with the EMA weights."""
    start = time.perf_counter()
    tc = cfg.joint_train
    task = JointTask(model, cfg, cfg.seed)
    trainer = Trainer(task, tc, log_dir=run_dir / "joint", name="joint", progress=progress)
    model.to(trainer.device)
    tokens = not cfg.joint.skip_token_decoder

    def eval_fn(ema: JointTask) -> dict[str, float]:
        with encoder_swapped(model, getattr(ema, "token_encoder", None)):  # a trainable E_h: the EMA's
            return joint_validation(model, ema.autoencoder, ema.denoiser, valid, tokens=tokens)

    trainer.fit(train.batches(tc.batch_size, cfg.seed), eval_fn)
    model.eval()
    return {"joint_minutes": (time.perf_counter() - start) / 60}


def train_token_decoder(
    model: LatentDiffusionLM,
    train: FeatureSource,
    valid: FeatureSource,
    cfg: RunConfig,
    run_dir: Path,
    progress: bool = True,
) -> dict:
    """Replace D_w by a fresh one and train it with ``decoder_train``; everything else is frozen. Returns its
    wall time."""
    start = time.perf_counter()
    ae = model.autoencoder
    ae.new_token_decoder()
    model.to(model.device)  # the fresh decoder is built on the CPU
    prepare_head(model, train, cfg.autoencoder, cfg.decoder_train, seed=cfg.seed, run_dir=run_dir, progress=progress)
    ae.requires_grad_(False)
    ae.token_blocks.requires_grad_(True)
    ae.head.requires_grad_(True)
    tc = cfg.decoder_train
    task = DecoderTask(model, cfg, cfg.seed)
    trainer = Trainer(task, tc, log_dir=run_dir / "decoder", name="decoder", progress=progress)
    eval_fn = lambda task: reconstruction_accuracy(model, valid, autoencoder=task.autoencoder, max_texts=256)
    trainer.fit(train.batches(tc.batch_size, cfg.seed), eval_fn)
    ae.requires_grad_(True)
    model.eval()
    return {"decoder_minutes": (time.perf_counter() - start) / 60}
