"""LDLM, one joint stage (LDLM Sec. 4-5): latent encoder E_z, latent decoder D_h, token decoder D_w and the
denoiser trained together on ``L = L_diff + lambda_h L_h + L_w`` (Eq. 4; lambda_h: :func:`hidden_loss_weight`).

``L_h = ||h - D_h(z0 + sigma_dec eps)||^2`` (Eq. 2) is the only reconstruction signal into E_z; ``L_w`` is the
token cross-entropy on ``sg(h_hat)`` (Eq. 3); ``L_diff`` (Eq. 1) is trained on the live ``z0``, whose gradient to
E_z is scaled by the warmup gamma(s) (App. A.2). Table 1's reconstruction ablations are ``joint.reconstruction``.
With ``autoencoder.latent_encoder=identity`` (TEncDM-like) z0 = h, there is no E_z/D_h to train and no L_h.
``train_ldlm(cfg)`` trains, optionally post-trains a fresh token decoder (App. B.2) and saves the model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from pathlib import Path

import torch
from torch import nn

from ldlm.autoencoder import decoder_input_noise
from ldlm.config import RunConfig
from ldlm.data import build_features, packed_tokens
from ldlm.data.registry import DatasetError
from ldlm.data.token_file import TokenRows, streamed_corpus
from ldlm.diffusion import diffusion_loss
from ldlm.diffusion.timesteps import timestep_sampler_for
from ldlm.encoder_warmup import scale_encoder_gradient, warmup_gamma
from ldlm.encoders import check_encoder_config
from ldlm.pipeline import LatentDiffusionLM
from ldlm.recipes.cosmos import (
    FeatureSource,
    load_cosmos_data,
    normalized_features,
    prepare_head,
    reconstruction_accuracy,
    validation_diffusion_loss,
)
from ldlm.recipes.decoder import token_loss, train_token_decoder
from ldlm.runstate import RunStages
from ldlm.train import Trainer

# --------------------------------------------------------------------------------------- data


class PackedFeatureSource(FeatureSource):
    """A :class:`FeatureSource` whose rows are chunks of ``max_length`` tokens packed from the texts (MDLM
    protocol: no special tokens, EOS between texts, no padding) instead of one padded row per text."""

    def __init__(self, model: LatentDiffusionLM, texts: list[str], cache: bool):
        encoder, length = model.encoder, model.max_length
        cache = self.cacheable(model, cache)
        self.cached = build_features(encoder, texts, length, packing=True) if cache else None
        rows = self.cached if cache else packed_tokens(encoder.tokenizer, texts, length)
        self.ids, self.mask = rows.input_ids, rows.attention_mask


def feature_source(model: LatentDiffusionLM, texts: list[str], cfg: RunConfig) -> FeatureSource:
    """Rows of ``texts`` as ``data.packing`` asks: packed chunks (LDLM presets) or padded texts (COSMOS)."""
    source = PackedFeatureSource if cfg.data.packing else FeatureSource
    return source(model, texts, cfg.data.cache_features)


class StreamedSource(FeatureSource):
    """Training rows read from a token file (``data.streaming``): packed chunks; E_h runs on each batch."""

    def __init__(self, rows: TokenRows):
        self.cached, self.rows = None, rows

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.rows.batch(indices)


def training_sources(model: LatentDiffusionLM, cfg: RunConfig) -> tuple[FeatureSource, FeatureSource, int, int]:
    """(train rows, held-out rows, #train texts, #held-out texts): texts in memory, or a token-file stream."""
    dc = cfg.data
    if dc.streaming:
        valid_texts, rows = streamed_corpus(
            dc.dataset,
            model.encoder.tokenizer,
            model.max_length,
            field=dc.text_field,
            split=dc.split,
            validation=int(dc.validation_size),
            max_texts=dc.max_texts,
        )
        return StreamedSource(rows), feature_source(model, valid_texts, cfg), rows.meta["texts"], len(valid_texts)
    data = load_cosmos_data(cfg)
    if not data.train:
        raise DatasetError(f"dataset {cfg.data.dataset!r} left no training texts after the validation split")
    train, valid = feature_source(model, data.train, cfg), feature_source(model, data.valid, cfg)
    return train, valid, len(data.train), len(data.valid)


def fit_feature_stats(model: LatentDiffusionLM, source: FeatureSource, max_rows: int) -> None:
    """Per-feature mean/std of the frozen encoder's h over the first ``max_rows`` training rows."""
    n = min(len(source), max_rows)
    model.encoder.fit_stats(source.raw_features(model, torch.arange(s, min(n, s + 64))) for s in range(0, n, 64))


# --------------------------------------------------------------------------------------- the joint objective


def hidden_loss_weight(cfg: RunConfig, model: LatentDiffusionLM) -> float:
    """lambda_h: ``joint.hidden_weight``, or (auto) (L*D)/(N*d), which turns the coded per-coordinate means of L_h
    (over h: L x D) and L_diff (over z: N x d) back into the ratio of Eq. 1-2's squared norms. The paper's
    N = L, d = D gives 1; ldlm_quick's 16 x 256 latents of 32 x 576 features give 4.5."""
    if cfg.joint.hidden_weight is not None:
        return cfg.joint.hidden_weight
    n, d = model.latent_shape
    return cfg.encoder.max_length * model.encoder.hidden_size / (n * d)


class JointTask(nn.Module):
    """``L_diff + lambda_h L_h + L_w`` on a batch; :meth:`losses` returns the (unweighted) terms separately."""

    def __init__(self, model: LatentDiffusionLM, cfg: RunConfig, seed: int):
        super().__init__()
        self.autoencoder, self.denoiser, self.schedule = model.autoencoder, model.denoiser, model.schedule
        self.cfg = cfg
        self.hidden_weight = hidden_loss_weight(cfg, model)
        self.timesteps = timestep_sampler_for(cfg.diffusion)  # a submodule (state in checkpoints) when adaptive
        # a plain function (not the module) so that EMA's deepcopy does not copy the frozen encoder
        self.features = lambda batch, device: normalized_features(model, batch, device, grad=True)
        if model.encoder.trainable:  # Emb_theta: a submodule, so it is optimised, averaged and checkpointed
            self.token_encoder = model.encoder
        self.generator = torch.Generator().manual_seed(seed)
        if cfg.joint.skip_token_decoder:  # App. B.2: D_w is trained afterwards, not here
            self.autoencoder.token_blocks.requires_grad_(False)
            self.autoencoder.head.requires_grad_(False)

    def decoder_input(self, z0: torch.Tensor) -> torch.Tensor:
        """z~0 = z0 + sigma_dec eps while training (Eq. 2); the clean z0 in eval mode. (B, N, d) -> (B, N, d)."""
        return decoder_input_noise(z0, self.cfg.joint.sigma_dec, self.generator) if self.training else z0

    def gamma(self, step: int) -> float:
        j = self.cfg.joint
        return warmup_gamma(step, j.warmup_steps, k=j.warmup_k, c=j.warmup_c, gamma_min=j.gamma_min)

    def losses(self, batch: dict, step: int) -> dict[str, torch.Tensor]:
        """{"diff", "mse", "ce"} scalars: the terms of Eq. 4 this config trains (Table 1 switches)."""
        return self._objective(batch, step)[0]

    def _objective(self, batch: dict, step: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        ae, joint = self.autoencoder, self.cfg.joint
        ids, mask, h = self.features(batch, ae.head.weight.device)  # (B, L), (B, L), (B, L, D)
        z0 = ae.encode(h, mask)  # (B, N, d), live: every term below may send gradient to E_z
        h_hat = ae.decode_hidden(self.decoder_input(z0), ids.shape[1])  # (B, L, D)
        terms: dict[str, torch.Tensor] = {}
        if "mse" in joint.reconstruction and not ae.identity_latents:  # L_h (Eq. 2); identity latents: no E_z/D_h
            m = mask.unsqueeze(-1).float()
            terms["mse"] = ((h_hat - h) ** 2 * m).sum() / (m.sum() * h.shape[-1])
        if not joint.skip_token_decoder:  # L_w (Eq. 3): on sg(h_hat) unless a Table 1 CE ablation asks otherwise
            h_in = h_hat.detach() if joint.reconstruction == "mse" else h_hat
            terms["ce"] = token_loss(ae, h_in, ids, mask, self.cfg, step, self.generator)
        t = self.timesteps.sample(z0.shape[0], self.generator).to(z0.device)
        per_sample = diffusion_loss(  # L_diff (Eq. 1) on z0 whose encoder gradient is scaled by gamma (Eq. 28)
            self.denoiser,
            self.schedule,
            scale_encoder_gradient(z0, self.gamma(step)),
            t,
            self_condition_prob=self.cfg.diffusion.self_condition_prob,
            generator=self.generator,
        )
        if self.training:
            self.timesteps.update(t, per_sample.detach())
        terms["diff"] = per_sample.mean()
        return terms, z0

    def forward(self, batch: dict, step: int) -> tuple[torch.Tensor, dict]:
        terms, z0 = self._objective(batch, step)
        loss = sum(self.hidden_weight * v if k == "mse" else v for k, v in terms.items())
        metrics = {"loss": loss.item(), **{k: v.item() for k, v in terms.items()}}
        metrics.update(gamma=self.gamma(step), latent_std=z0.detach().std(0).mean().item())
        return loss, metrics


@torch.no_grad()
def encode_rows(autoencoder: nn.Module, model: LatentDiffusionLM, source: FeatureSource, n: int) -> torch.Tensor:
    """Clean latents z0: (n, N, d) of the first ``n`` rows of ``source`` with ``autoencoder``."""
    device = autoencoder.head.weight.device
    out = []
    for start in range(0, min(n, len(source)), 64):
        batch = source.batch(torch.arange(start, min(n, len(source), start + 64)))
        _, mask, h = normalized_features(model, batch, device)
        out.append(autoencoder.encode(h, mask))
    return torch.cat(out)


def joint_validation(
    model: LatentDiffusionLM,
    autoencoder: nn.Module,
    denoiser: nn.Module,
    valid: FeatureSource,
    *,
    tokens: bool = True,
    max_rows: int = 256,
    true_h: bool = False,
) -> dict[str, float]:
    """Held-out clean reconstruction (MSE, and token accuracy if ``tokens``; ``true_h``: also on the true h), the
    diffusion loss on a fixed t grid and the coordinate-wise latent std (LDLM Fig. 4), for the given weights."""
    rec = reconstruction_accuracy(model, valid, autoencoder=autoencoder, max_texts=max_rows, true_h=tokens and true_h)
    if not tokens:
        rec.pop("acc")
    z0 = encode_rows(autoencoder, model, valid, max_rows)
    diff = validation_diffusion_loss(denoiser, model.schedule, z0)["loss"]
    return {**rec, "diffusion_loss": diff, "latent_std": z0.std(0).mean().item()}


@contextlib.contextmanager
def encoder_swapped(model: LatentDiffusionLM, encoder: nn.Module | None):
    """Within the block ``model`` reads h through ``encoder`` (e.g. the EMA copy of a trainable E_h); None: as is."""
    live = model.encoder
    if encoder is not None:
        model.encoder = encoder
    try:
        yield
    finally:
        model.encoder = live


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


# --------------------------------------------------------------------------------------- recipe


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
    train, valid, train_texts, valid_texts = training_sources(model, cfg)
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
            prepare_head(model, train, dataclasses.replace(cfg, autoencoder_train=cfg.joint_train), run_dir, progress)
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
    summary["train_minutes"] = (time.perf_counter() - start) / 60
    summary = {k: (round(v, 5) if isinstance(v, float) and math.isfinite(v) else v) for k, v in summary.items()}
    stages.save_outputs(model, summary)  # rank 0 writes run_dir/model and summary.json
    return model, summary
