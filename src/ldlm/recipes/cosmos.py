"""COSMOS, two stages: (1) a robust text autoencoder on frozen-encoder features, (2) latent diffusion.

Stage 1 loss (Sec. 4.2.2): ``CE(w, w_hat) + MSE(h, h_hat)`` under activation perturbations and latent
dropout (:mod:`ldlm.objectives.autoencoder`). Stage 2 (App. C.1): x0-prediction diffusion with self-conditioning on
standardised latents of the frozen autoencoder (:mod:`ldlm.objectives.diffusion`). ``train_cosmos(cfg)`` runs both
(:mod:`ldlm.recipes.stages`) and saves a :class:`LatentDiffusionLM`.
"""

from __future__ import annotations

import warnings

import torch

from ldlm._moved import moved_names
from ldlm.config import RunConfig
from ldlm.data.texts import load_run_texts, require_training_texts
from ldlm.model.encoders import check_encoder_config
from ldlm.pipeline import LatentDiffusionLM
from ldlm.recipes.stages import train_autoencoder, train_diffusion
from ldlm.training.runstate import RunStages


def train_cosmos(
    cfg: RunConfig, *, progress: bool = True, model: LatentDiffusionLM | None = None, resume: bool = False
) -> tuple:
    """Train both stages, save the model to ``run_dir/model`` and ``run_dir/summary.json``; return (model, summary).
    ``resume``: skip the stages an earlier run finished and continue the interrupted one from its checkpoint."""
    check_encoder_config(cfg)  # layer range, vocabulary, token decoder heads: fail before loading data or training
    run_dir = cfg.run_dir
    stages = RunStages(cfg, resume=resume)  # run_dir, config.json (rank 0) and the per-stage snapshots
    torch.manual_seed(cfg.seed)
    data = load_run_texts(cfg.data)
    require_training_texts(data, cfg.data)
    model = model or LatentDiffusionLM(cfg)
    summary = {"name": cfg.name, "train_texts": len(data.train), "valid_texts": len(data.valid)}
    summary.update(stages.run("autoencoder", model, lambda: train_autoencoder(model, data, cfg, run_dir, progress)))
    summary.update(stages.run("diffusion", model, lambda: train_diffusion(model, data, cfg, run_dir, progress)))
    summary["train_minutes"] = summary["autoencoder_minutes"] + summary["diffusion_minutes"]
    return model, stages.finish(model, summary)  # rank 0 writes run_dir/model and summary.json


def load_cosmos_data(cfg: RunConfig):
    """Deprecated: :func:`ldlm.data.texts.load_run_texts` of ``cfg.data``."""
    warnings.warn(
        "ldlm.recipes.cosmos.load_cosmos_data(cfg) moved to ldlm.data.texts.load_run_texts(cfg.data)",
        DeprecationWarning,
        stacklevel=2,
    )
    return load_run_texts(cfg.data)


def prepare_head(model: LatentDiffusionLM, source, cfg: RunConfig, run_dir, progress: bool) -> None:
    """Deprecated: :func:`ldlm.objectives.head.prepare_head`, which takes the autoencoder and train sections."""
    from ldlm.objectives.head import prepare_head as prepare

    warnings.warn(
        "ldlm.recipes.cosmos.prepare_head(model, source, cfg, ...) moved to ldlm.objectives.head.prepare_head(model, "
        "source, cfg.autoencoder, cfg.autoencoder_train, seed=cfg.seed, ...)",
        DeprecationWarning,
        stacklevel=2,
    )
    prepare(model, source, cfg.autoencoder, cfg.autoencoder_train, seed=cfg.seed, run_dir=run_dir, progress=progress)


__getattr__ = moved_names(
    __name__,
    {
        "CosmosData": "ldlm.data.texts:RunTexts",
        "full_window_texts": "ldlm.data.texts",
        "diffusion_texts": "ldlm.data.texts",
        "FeatureSource": "ldlm.data.sources",
        "normalized_features": "ldlm.data.sources",
        "AutoencoderTask": "ldlm.objectives.autoencoder",
        "reconstruction_accuracy": "ldlm.objectives.autoencoder",
        "HeadTask": "ldlm.objectives.head",
        "head_accuracy": "ldlm.objectives.head",
        "DiffusionTask": "ldlm.objectives.diffusion",
        "validation_diffusion_loss": "ldlm.objectives.diffusion",
        "encode_latents": "ldlm.objectives.diffusion",
        "fit_latent_stats": "ldlm.objectives.diffusion",
        "train_autoencoder": "ldlm.recipes.stages",
        "train_diffusion": "ldlm.recipes.stages",
    },
)
