"""LDLM, one joint stage (LDLM Sec. 4-5): latent encoder E_z, latent decoder D_h, token decoder D_w and the
denoiser trained together on ``L = L_diff + lambda_h L_h + L_w`` (Eq. 4; the objective:
:mod:`ldlm.objectives.joint`), optionally followed by a fresh token decoder post-trained on the frozen latents
(App. B.2, :mod:`ldlm.objectives.decoder`). ``train_ldlm(cfg)`` trains and saves the model.
"""

from __future__ import annotations

import time
import warnings

import torch

from ldlm._moved import moved_names
from ldlm.config import RunConfig
from ldlm.data import sources
from ldlm.data.sources import fit_feature_stats
from ldlm.model.encoders import check_encoder_config
from ldlm.objectives.head import prepare_head
from ldlm.objectives.joint import hidden_loss_weight, joint_validation
from ldlm.pipeline import LatentDiffusionLM
from ldlm.recipes.stages import train_joint, train_token_decoder
from ldlm.training.runstate import RunStages


def train_ldlm(
    cfg: RunConfig, *, progress: bool = True, model: LatentDiffusionLM | None = None, resume: bool = False
) -> tuple:
    """Joint training (+ optional token-decoder post-training), then ``run_dir/model`` and ``summary.json``.
    ``resume``: skip the stages an earlier run finished and continue the interrupted one from its checkpoint."""
    check_encoder_config(cfg)  # layer range, vocabulary, heads: fail before loading data or training
    run_dir = cfg.run_dir
    stages = RunStages(cfg, resume=resume)  # run_dir, config.json (rank 0) and the per-stage snapshots
    torch.manual_seed(cfg.seed)
    model = model or LatentDiffusionLM(cfg)
    start = time.perf_counter()
    train, valid, train_texts, valid_texts = sources.training_sources(model, cfg.data)
    fit_feature_stats(model, train, cfg.encoder.stats_texts)
    summary: dict = {
        "name": cfg.name,
        "recipe": "ldlm",
        "train_texts": train_texts,
        "valid_texts": valid_texts,
        "train_rows": len(train),
        "valid_rows": len(valid),
        "feature_minutes": (time.perf_counter() - start) / 60,
    }
    if not model.autoencoder.identity_latents:
        summary["hidden_weight"] = hidden_loss_weight(cfg, model)

    def joint_stage() -> dict:
        if not cfg.joint.skip_token_decoder:  # centroid init / pre-training of the head on the true h
            prepare_head(
                model, train, cfg.autoencoder, cfg.joint_train, seed=cfg.seed, run_dir=run_dir, progress=progress
            )
        return train_joint(model, train, valid, cfg, run_dir, progress)

    # The decoder stage replaces D_w: a finished joint stage is then restored without it, so that a run can be
    # resumed with a new token decoder (e.g. autoencoder.token_decoder_layers=2 decoder_train.steps=...).
    fresh = ("autoencoder.token_blocks.", "autoencoder.head.") if cfg.decoder_train.steps else ()
    summary.update(stages.run("joint", model, joint_stage, fresh=fresh))
    summary["decoder_minutes"] = 0.0
    if cfg.decoder_train.steps:
        decoder_stage = lambda: train_token_decoder(model, train, valid, cfg, run_dir, progress)
        summary.update(stages.run("decoder", model, decoder_stage))
    final = joint_validation(model, model.autoencoder, model.denoiser, valid, max_rows=len(valid), true_h=True)
    summary.update({f"heldout_{k}": v for k, v in final.items()})
    if "heldout_acc" in summary:
        summary["heldout_token_accuracy"] = summary.pop("heldout_acc")
        summary["heldout_head_accuracy_true_h"] = summary.pop("heldout_acc_true_h")
    # the stages' minutes, so that a resumed run counts the stages an earlier call trained (as the COSMOS recipe does)
    summary["train_minutes"] = summary["feature_minutes"] + summary["joint_minutes"] + summary["decoder_minutes"]
    return model, stages.finish(model, summary)  # rank 0 writes run_dir/model and summary.json


def feature_source(model: LatentDiffusionLM, texts: list[str], cfg: RunConfig):
    """Deprecated: :func:`ldlm.data.sources.feature_source` of ``cfg.data``."""
    _deprecated("feature_source(model, texts, cfg)", "ldlm.data.sources.feature_source(model, texts, cfg.data)")
    return sources.feature_source(model, texts, cfg.data)


def training_sources(model: LatentDiffusionLM, cfg: RunConfig):
    """Deprecated: :func:`ldlm.data.sources.training_sources` of ``cfg.data``."""
    _deprecated("training_sources(model, cfg)", "ldlm.data.sources.training_sources(model, cfg.data)")
    return sources.training_sources(model, cfg.data)


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"ldlm.recipes.ldlm.{old} moved to {new}", DeprecationWarning, stacklevel=3)


__getattr__ = moved_names(
    __name__,
    {
        **dict.fromkeys(("FeatureSource", "PackedFeatureSource", "StreamedSource"), "ldlm.data.sources"),
        "fit_feature_stats": "ldlm.data.sources",
        **dict.fromkeys(
            ("hidden_loss_weight", "JointTask", "encode_rows", "joint_validation", "encoder_swapped"),
            "ldlm.objectives.joint",
        ),
        "train_joint": "ldlm.recipes.stages",
    },
)
