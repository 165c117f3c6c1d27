"""COSMOS, two stages: (1) a robust text autoencoder on frozen-encoder features, (2) latent diffusion.

Stage 1 loss (Sec. 4.2.2): ``CE(w, w_hat) + MSE(h, h_hat)`` under activation perturbations and latent
dropout. Stage 2 (App. C.1): x0-prediction diffusion with self-conditioning on standardised latents of
the frozen autoencoder. ``train_cosmos(cfg)`` runs both and saves a :class:`LatentDiffusionLM`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from ldlm.autoencoder import (
    augmentation_strength,
    centroid_head_,
    kl_divergence,
    latent_dropout,
    perturb_activations,
    token_cross_entropy,
)
from ldlm.config import RunConfig, TrainConfig
from ldlm.data import FeatureSet, build_features, load_texts, split_texts, tokenize_texts
from ldlm.data.registry import DatasetError
from ldlm.diffusion import diffusion_loss
from ldlm.diffusion.timesteps import timestep_sampler_for
from ldlm.encoders import check_encoder_config
from ldlm.pipeline import LatentDiffusionLM
from ldlm.runstate import RunStages
from ldlm.train import Trainer, infinite_batches

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------- data


@dataclasses.dataclass
class CosmosData:
    """Texts of one run: diffusion trains on ``train``; the autoencoder on ``train + extra``; ``valid`` is
    held out from both."""

    train: list[str]
    valid: list[str]
    extra: list[str]

    @property
    def autoencoder_texts(self) -> list[str]:
        return self.train + self.extra


def load_cosmos_data(cfg: RunConfig) -> CosmosData:
    dc = cfg.data
    texts = load_texts(dc.dataset, max_texts=dc.max_texts, field=dc.text_field, seed=dc.seed)
    size = int(dc.validation_size) if dc.validation_size >= 1 else dc.validation_size
    train, valid = split_texts(texts, size, dc.seed)
    held_out = set(valid)
    for name in dc.train_extra:  # more training texts for both stages; the held-out split is unchanged
        train += [t for t in load_texts(name, field=dc.text_field, seed=dc.seed) if t not in held_out]
    extra: list[str] = []
    for name in dc.autoencoder_extra:
        more = load_texts(name, max_texts=dc.extra_max_texts, field=dc.text_field, seed=dc.seed)
        extra += [t for t in more if t not in held_out]  # never train the autoencoder on held-out texts
    return CosmosData(train, valid, extra)


class FeatureSource:
    """Batches of ``input_ids``/``attention_mask`` and, when cached, raw features ``h`` (B, L, D)."""

    def __init__(self, model: LatentDiffusionLM, texts: list[str], cache: bool):
        self.cached: FeatureSet | None = None
        if self.cacheable(model, cache):
            self.cached = build_features(model.encoder, texts, model.max_length)
            self.ids, self.mask = self.cached.input_ids, self.cached.attention_mask
        else:
            tok = tokenize_texts(model.encoder.tokenizer, texts, model.max_length)
            self.ids, self.mask = tok.input_ids, tok.attention_mask

    @staticmethod
    def cacheable(model: LatentDiffusionLM, cache: bool) -> bool:
        """Whether h may be cached: asked for, and E_h frozen (a trainable E_h's h changes every step)."""
        return cache and not model.encoder.trainable

    def __len__(self) -> int:
        return self.ids.shape[0]

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.cached is not None:
            return self.cached.batch(indices)
        return {"input_ids": self.ids[indices], "attention_mask": self.mask[indices]}

    def raw_features(self, model: LatentDiffusionLM, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unnormalised h: (B, L, D) and mask: (B, L) for ``indices`` (cached, or computed by E_h)."""
        batch = self.batch(indices)
        mask = batch["attention_mask"]
        return (batch["h"] if "h" in batch else model.encoder(batch["input_ids"], mask)), mask

    def batches(self, batch_size: int, seed: int):
        return infinite_batches(len(self), batch_size, self.batch, seed)


def normalized_features(model: LatentDiffusionLM, batch: dict, device: torch.device, *, grad: bool = False) -> tuple:
    """(ids, mask, h) on ``device`` with h normalised and zeroed at padding; runs E_h if h is not cached.
    ``grad``: h keeps its graph to a trainable E_h (the LDLM joint stage only); otherwise h is a constant."""
    ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    if "h" in batch:
        raw = batch["h"].to(device)
    else:  # no cache: run E_h now
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            raw = model.encoder(ids, mask)
    return ids, mask, model.encoder.normalize(raw) * mask.unsqueeze(-1)


# --------------------------------------------------------------------------------------- stage 1


class AutoencoderTask(nn.Module):
    """Stage-1 objective: ``ce_weight CE(w, D_w(h_hat)) + mse_weight MSE(h, h_hat) [+ kl_weight KL]``,
    with ``h_hat = D_h(dropout(E_z(perturb(h))))`` reconstructing the *clean* h. Identity latents (z = h, no E_z/D_h
    weights): h_hat = dropout(perturb(h)) and only ``CE`` trains D_w (the MSE term would be a constant, left out)."""

    def __init__(self, model: LatentDiffusionLM, seed: int):
        super().__init__()
        self.autoencoder = model.autoencoder
        self.cfg = model.cfg.autoencoder
        # a plain function (not the module) so that EMA's deepcopy does not copy the frozen encoder
        self.features = lambda batch, device: normalized_features(model, batch, device)
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, batch: dict, step: int) -> tuple[torch.Tensor, dict]:
        cfg, ae = self.cfg, self.autoencoder
        ids, mask, h = self.features(batch, ae.head.weight.device)
        strength = augmentation_strength(cfg, step)
        h_in, _ = perturb_activations(h, mask, cfg, strength, self.generator)
        mean, logvar = ae.encode_distribution(h_in, mask)
        z = mean
        if logvar is not None:  # VAE variant: reparameterised sample
            z = mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=self.generator).to(mean.device)
        z = latent_dropout(z, cfg.latent_dropout * strength, self.generator)
        h_hat = ae.decode_hidden(z, ids.shape[1])
        ce = token_cross_entropy(
            ae.head,
            ae.token_features(h_hat, mask),  # D_w's blocks (none unless autoencoder.token_decoder_layers > 0)
            ids,
            mask,
            positions=cfg.ce_positions,
            negatives=cfg.ce_negatives,
            generator=self.generator,
            detach_head=cfg.freeze_head_steps < 0 or step < cfg.freeze_head_steps,
        )
        loss = cfg.ce_weight * ce
        metrics = {"ce": ce.item(), "aug": strength}
        if not ae.identity_latents:
            m = mask.unsqueeze(-1).float()
            mse = ((h_hat - h) ** 2 * m).sum() / (m.sum() * h.shape[-1])
            loss = loss + cfg.mse_weight * mse
            metrics["mse"] = mse.item()
        metrics["loss"] = loss.item()
        if logvar is not None:
            kl = kl_divergence(mean, logvar)
            loss = loss + cfg.kl_weight * kl
            metrics["kl"] = kl.item()
        return loss, metrics


@torch.no_grad()
def reconstruction_accuracy(
    model: LatentDiffusionLM,
    source: FeatureSource,
    *,
    autoencoder: nn.Module | None = None,
    max_texts: int = 512,
    batch_size: int = 64,
    true_h: bool = False,
) -> dict[str, float]:
    """Held-out token accuracy (full-vocabulary argmax over real positions) and MSE(h, h_hat), clean input.
    ``true_h``: also the token decoder's accuracy on the true h ("acc_true_h"), which separates the tokens lost
    in the latent bottleneck (h -> z -> h_hat) from those the decoder gets wrong anyway."""
    ae = autoencoder or model.autoencoder
    device = ae.head.weight.device
    correct = correct_h = total = 0
    sq = 0.0
    n = min(len(source), max_texts)
    for start in range(0, n, batch_size):
        ids, mask, h = normalized_features(model, source.batch(torch.arange(start, min(n, start + batch_size))), device)
        h_hat = ae.decode_hidden(ae.encode(h, mask), ids.shape[1])
        real = mask.bool()
        correct += (ae.logits(h_hat, mask).argmax(-1)[real] == ids[real]).sum().item()
        if true_h:
            correct_h += (ae.logits(h, mask).argmax(-1)[real] == ids[real]).sum().item()
        total += real.sum().item()
        sq += ((h_hat - h) ** 2)[real].mean(-1).sum().item()
    return {"acc": correct / total, "mse": sq / total, **({"acc_true_h": correct_h / total} if true_h else {})}


class HeadTask(nn.Module):
    """Pre-trains the token head D_w on the true features h (CPU engineering option ``head_pretrain_steps``)."""

    def __init__(self, model: LatentDiffusionLM, seed: int):
        super().__init__()
        self.head = model.autoencoder.head
        self.cfg = model.cfg.autoencoder
        self.features = lambda batch, device: normalized_features(model, batch, device)
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, batch: dict, step: int) -> tuple[torch.Tensor, dict]:
        ids, mask, h = self.features(batch, self.head.weight.device)
        ce = token_cross_entropy(
            self.head,
            h,
            ids,
            mask,
            positions=self.cfg.ce_positions,
            negatives=self.cfg.ce_negatives,
            generator=self.generator,
        )
        return ce, {"loss": ce.item()}


@torch.no_grad()
def head_accuracy(model: LatentDiffusionLM, source: FeatureSource, max_texts: int = 512) -> float:
    """Token accuracy of the head D_w on the *true* features h: the ceiling a perfect D_h could reach."""
    head = model.autoencoder.head
    ids, mask, h = normalized_features(
        model, source.batch(torch.arange(min(len(source), max_texts))), head.weight.device
    )
    real = mask.bool()
    return (head(h[real]).argmax(-1) == ids[real]).float().mean().item()


def prepare_head(
    model: LatentDiffusionLM, source: FeatureSource, cfg: RunConfig, run_dir: Path, progress: bool
) -> None:
    """Centroid initialisation and/or pre-training of the token head on the true features."""
    ac = cfg.autoencoder
    head = model.autoencoder.head
    if ac.head_init == "centroid":
        n = min(len(source), 8192)
        ids, mask, h = normalized_features(model, source.batch(torch.arange(n)), torch.device("cpu"))
        seen = centroid_head_(head, h[mask.bool()], ids[mask.bool()])
        log.info("token head initialised from class centroids (%d classes seen)", seen)
    if ac.head_pretrain_steps:
        tc = dataclasses.replace(
            cfg.autoencoder_train,
            steps=ac.head_pretrain_steps,
            warmup_steps=0,
            lr_schedule="constant",
            ema_decay=0.0,
            eval_every=10**9,
            save_every=0,
            log_every=min(50, ac.head_pretrain_steps),
        )
        trainer = Trainer(HeadTask(model, cfg.seed), tc, log_dir=run_dir / "head", name="head", progress=progress)
        model.to(trainer.device)  # E_h (its feature statistics) beside the head: the trainer moves only the task
        trainer.fit(source.batches(tc.batch_size, cfg.seed))


def train_autoencoder(
    model: LatentDiffusionLM, data: CosmosData, cfg: RunConfig, run_dir: Path, progress: bool = True
) -> dict:
    """Stage 1. Fits the feature statistics, prepares the head, trains E_z/D_h(/D_w); returns metrics."""
    start = time.perf_counter()
    train = FeatureSource(model, data.autoencoder_texts, cfg.data.cache_features)
    valid = FeatureSource(model, data.valid, cfg.data.cache_features)
    stats_n = min(len(train), cfg.encoder.stats_texts)
    stats_batches = (train.raw_features(model, torch.arange(s, min(stats_n, s + 64))) for s in range(0, stats_n, 64))
    model.encoder.fit_stats(stats_batches)
    prep_start = time.perf_counter()
    prepare_head(model, train, cfg, run_dir, progress)
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


# --------------------------------------------------------------------------------------- stage 2


@torch.no_grad()
def encode_latents(
    model: LatentDiffusionLM, texts: list[str], batch_size: int = 128, cache: bool = True
) -> torch.Tensor:
    """Raw (unnormalised) latents z: (n, N, d) of ``texts`` with the frozen autoencoder, no augmentation."""
    source = FeatureSource(model, texts, cache)
    device = model.device
    out = []
    for start in range(0, len(source), batch_size):
        _, mask, h = normalized_features(
            model, source.batch(torch.arange(start, min(len(source), start + batch_size))), device
        )
        out.append(model.autoencoder.encode(h, mask).cpu())
    return torch.cat(out)


def fit_latent_stats(model: LatentDiffusionLM, z: torch.Tensor) -> None:
    """Per-(position, feature) mean/std of z (COSMOS: estimated on held-out data). Identity latents keep mean 0 and
    std 1: z = h is already standardised per feature, and a position that is padding (h = 0) in every held-out row
    would get std ~0 and blow up the training latents that are real there."""
    if model.autoencoder.identity_latents:
        return
    model.latent_mean.copy_(z.mean(0))
    model.latent_std.copy_(z.std(0).clamp_min(1e-4) if z.shape[0] > 1 else torch.ones_like(z[0]))


class DiffusionTask(nn.Module):
    """Stage-2 objective: x0-prediction MSE with self-conditioning, t from the configured sampler. Batches with a
    source (``src`` (B, S, d), ``src_mask`` (B, S)) train the seq2seq denoiser, dropping the source for a share
    ``condition_dropout`` of the samples (classifier-free guidance)."""

    def __init__(self, model: LatentDiffusionLM, seed: int, condition_dropout: float = 0.0):
        super().__init__()
        self.denoiser = model.denoiser
        self.schedule = model.schedule
        dc = model.cfg.diffusion
        self.self_condition_prob = dc.self_condition_prob
        self.condition_dropout = condition_dropout
        self.timesteps = timestep_sampler_for(dc)
        self.generator = torch.Generator().manual_seed(seed)

    def condition(self, batch: dict, device: torch.device):
        """The batch's encoded source with per-sample keep flags, or None for unconditional batches."""
        if "src" not in batch:
            return None
        keep = None
        if self.condition_dropout > 0:
            keep = (torch.rand(batch["src"].shape[0], generator=self.generator) >= self.condition_dropout).to(device)
        return self.denoiser.encode_condition(batch["src"].to(device), batch["src_mask"].to(device), keep)

    def forward(self, batch: dict, step: int) -> tuple[torch.Tensor, dict]:
        z0 = batch["z"].to(self.denoiser.pos.device)
        t = self.timesteps.sample(z0.shape[0], self.generator).to(z0.device)
        per_sample = diffusion_loss(
            self.denoiser,
            self.schedule,
            z0,
            t,
            self_condition_prob=self.self_condition_prob,
            generator=self.generator,
            cond=self.condition(batch, z0.device),
        )
        self.timesteps.update(t.detach(), per_sample.detach())
        return per_sample.mean(), {"loss": per_sample.mean().item()}


@torch.no_grad()
def validation_diffusion_loss(
    denoiser: nn.Module, schedule, z0: torch.Tensor, num_t: int = 8, source: tuple | None = None
) -> dict[str, float]:
    """Mean x0-MSE on held-out latents at a fixed grid of t (deterministic noise): comparable across steps.
    ``source``: (src (B, S, d), src_mask (B, S)) for a seq2seq denoiser."""
    generator = torch.Generator().manual_seed(1234)
    device = next(denoiser.parameters()).device
    z0 = z0.to(device)
    cond = None if source is None else denoiser.encode_condition(source[0].to(device), source[1].to(device))
    losses = []
    for t_val in torch.linspace(0.05, 0.95, num_t):
        t = torch.full((z0.shape[0],), float(t_val), device=device)
        loss = diffusion_loss(denoiser, schedule, z0, t, self_condition_prob=0.0, generator=generator, cond=cond)
        losses.append(loss.mean())
    return {"loss": torch.stack(losses).mean().item()}


def full_window_texts(model: LatentDiffusionLM, texts: list[str]) -> list[str]:
    """The texts whose tokenisation fills all ``max_length`` positions (no padding row after truncation)."""
    if not texts:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation is expected here: a text longer than L fills the window
        lengths = tokenize_texts(model.encoder.tokenizer, texts, model.max_length).attention_mask.sum(1)
    return [t for t, n in zip(texts, lengths.tolist(), strict=True) if n == model.max_length]


def diffusion_texts(model: LatentDiffusionLM, data: CosmosData, cfg: RunConfig) -> tuple[list[str], list[str]]:
    """(train, valid) texts of stage 2: all of them, or with ``data.diffusion_full_window`` the full ones."""
    if not cfg.data.diffusion_full_window:
        return data.train, data.valid
    train, valid = full_window_texts(model, data.train), full_window_texts(model, data.valid)
    if not train:
        raise DatasetError(
            f"data.diffusion_full_window=true kept none of {len(data.train)} training texts: none fills "
            f"encoder.max_length={model.max_length} tokens; lower encoder.max_length or set it to false"
        )
    log.info(
        "diffusion_full_window: %d of %d training texts fill all %d positions",
        len(train),
        len(data.train),
        model.max_length,
    )
    return train, valid


def train_diffusion(
    model: LatentDiffusionLM, data: CosmosData, cfg: RunConfig, run_dir: Path, progress: bool = True
) -> dict:
    """Stage 2 on the frozen autoencoder's standardised latents of the training texts."""
    start = time.perf_counter()
    model.eval()
    train_texts, valid_texts = diffusion_texts(model, data, cfg)
    z_train = encode_latents(model, train_texts, cache=cfg.data.cache_features)
    # (when no held-out text fills the window, validate on training latents)
    z_valid = encode_latents(model, valid_texts, cache=cfg.data.cache_features) if valid_texts else z_train[:512]
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
        "diffusion_texts": len(train_texts),
        "val_diffusion_loss": validation_diffusion_loss(model.denoiser, model.schedule, z_valid)["loss"],
    }


# --------------------------------------------------------------------------------------- both


def train_cosmos(
    cfg: RunConfig, *, progress: bool = True, model: LatentDiffusionLM | None = None, resume: bool = False
) -> tuple:
    """Train both stages, save the model to ``run_dir/model`` and ``run_dir/summary.json``; return (model, summary).
    ``resume``: skip the stages an earlier run finished and continue the interrupted one from its checkpoint."""
    check_encoder_config(cfg)  # layer range, vocabulary, token decoder heads: fail before loading data or training
    run_dir = cfg.run_dir
    stages = RunStages(cfg, resume=resume)  # run_dir, config.json (rank 0) and the per-stage snapshots
    torch.manual_seed(cfg.seed)
    data = load_cosmos_data(cfg)
    if not data.train:
        raise DatasetError(f"dataset {cfg.data.dataset!r} left no training texts after the validation split")
    model = model or LatentDiffusionLM(cfg)
    summary = {"name": cfg.name, "train_texts": len(data.train), "valid_texts": len(data.valid)}
    summary.update(stages.run("autoencoder", model, lambda: train_autoencoder(model, data, cfg, run_dir, progress)))
    summary.update(stages.run("diffusion", model, lambda: train_diffusion(model, data, cfg, run_dir, progress)))
    summary["train_minutes"] = summary["autoencoder_minutes"] + summary["diffusion_minutes"]
    summary = {k: (round(v, 5) if isinstance(v, float) and math.isfinite(v) else v) for k, v in summary.items()}
    stages.save_outputs(model, summary)  # rank 0 writes run_dir/model and summary.json
    return model, summary
