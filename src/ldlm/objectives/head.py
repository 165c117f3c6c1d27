"""The token head D_w before the autoencoder trains: nearest-class-mean initialisation on the true features h and an
optional short pre-training (``autoencoder.head_init``, ``autoencoder.head_pretrain_steps``: CPU engineering options
beyond the papers), and its accuracy on the true h (the ceiling a perfect D_h could reach)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ldlm.config import AutoencoderConfig, TrainConfig
from ldlm.data.sources import FeatureSource, normalized_features
from ldlm.objectives.losses import token_cross_entropy
from ldlm.pipeline import LatentDiffusionLM
from ldlm.training.train import Trainer

log = logging.getLogger(__name__)


@torch.no_grad()
def centroid_head_(head: nn.Linear, h: torch.Tensor, targets: torch.Tensor) -> int:
    """Initialise ``head`` as a nearest-class-mean classifier on (P, D) features; returns #classes seen.

    logits_c = s (h . mu_c - |mu_c|^2 / 2) ranks classes by Euclidean distance to their mean; the scale s
    (a temperature) is chosen on the same features to minimise the cross-entropy, so the head's first
    gradients have a sensible size. Unseen classes get zero weights and a bias below every seen class's.
    """
    vocab, dim = head.weight.shape
    h = h.float()
    sums = torch.zeros(vocab, dim).index_add_(0, targets, h)
    counts = torch.bincount(targets, minlength=vocab).float()
    seen = counts > 0
    means = sums / counts.clamp_min(1).unsqueeze(1)
    bias = -0.5 * (means**2).sum(1)
    classes = seen.nonzero().squeeze(1)
    probe = torch.randperm(h.shape[0], generator=torch.Generator().manual_seed(0))[:4096]
    logits = h[probe] @ means[classes].T + bias[classes]  # (P', C_seen)
    labels = torch.searchsorted(classes, targets[probe])
    scales = torch.logspace(-3, 1, 41)
    best = min(scales.tolist(), key=lambda sc: F.cross_entropy(logits * sc, labels).item())
    bias = bias * best
    head.weight.copy_(means * best)
    head.bias.copy_(torch.where(seen, bias, bias[seen].min() - 10.0))
    return int(seen.sum())


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
    model: LatentDiffusionLM,
    source: FeatureSource,
    ac: AutoencoderConfig,
    tc: TrainConfig,
    *,
    seed: int,
    run_dir: Path,
    progress: bool,
) -> None:
    """Centroid initialisation (``ac.head_init``) and/or ``ac.head_pretrain_steps`` of pre-training of the token
    head on the true features, with the optimiser settings of the stage it precedes (``tc``)."""
    head = model.autoencoder.head
    if ac.head_init == "centroid":
        n = min(len(source), 8192)
        ids, mask, h = normalized_features(model, source.batch(torch.arange(n)), torch.device("cpu"))
        seen = centroid_head_(head, h[mask.bool()], ids[mask.bool()])
        log.info("token head initialised from class centroids (%d classes seen)", seen)
    if ac.head_pretrain_steps:
        tc = dataclasses.replace(
            tc,
            steps=ac.head_pretrain_steps,
            warmup_steps=0,
            lr_schedule="constant",
            ema_decay=0.0,
            eval_every=10**9,
            save_every=0,
            log_every=min(50, ac.head_pretrain_steps),
        )
        trainer = Trainer(HeadTask(model, seed), tc, log_dir=run_dir / "head", name="head", progress=progress)
        model.to(trainer.device)  # E_h (its feature statistics) beside the head: the trainer moves only the task
        trainer.fit(source.batches(tc.batch_size, seed))
