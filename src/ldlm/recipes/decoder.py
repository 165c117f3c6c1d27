"""Token-decoder post-training (LDLM App. B.2): E_z, D_h and the denoiser stay fixed; a fresh token decoder D_w
(``autoencoder.token_decoder_layers`` blocks + linear head) learns ``CE(w, D_w(D_h(z0 + sigma_dec eps)))`` only.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch
from torch import nn

from ldlm.autoencoder import TextAutoencoder, decoder_input_noise, token_cross_entropy
from ldlm.config import RunConfig
from ldlm.pipeline import LatentDiffusionLM
from ldlm.recipes.cosmos import FeatureSource, normalized_features, prepare_head, reconstruction_accuracy
from ldlm.train import Trainer


def token_loss(
    ae: TextAutoencoder,
    h_hat: torch.Tensor,
    ids: torch.Tensor,
    mask: torch.Tensor,
    cfg: RunConfig,
    step: int,
    generator,
) -> torch.Tensor:
    """L_w = CE(w, D_w(h_hat)) (LDLM Eq. 3) with the configured sampled softmax and head freezing (CPU options);
    h_hat: (B, L, D), ids/mask: (B, L) -> scalar."""
    ac = cfg.autoencoder
    return token_cross_entropy(
        ae.head,
        ae.token_features(h_hat, mask),
        ids,
        mask,
        positions=ac.ce_positions,
        negatives=ac.ce_negatives,
        generator=generator,
        detach_head=ac.freeze_head_steps < 0 or step < ac.freeze_head_steps,
    )


class DecoderTask(nn.Module):
    """CE of the token decoder on noisy latents of the frozen latent encoder/decoder (no L_h, no L_diff)."""

    def __init__(self, model: LatentDiffusionLM, cfg: RunConfig, seed: int):
        super().__init__()
        self.autoencoder = model.autoencoder  # only token_blocks and head require grad (see train_token_decoder)
        self.cfg = cfg
        self.features = lambda batch, device: normalized_features(model, batch, device)
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, batch: dict, step: int) -> tuple[torch.Tensor, dict]:
        ae = self.autoencoder
        ids, mask, h = self.features(batch, ae.head.weight.device)  # (B, L), (B, L), (B, L, D)
        with torch.no_grad():  # the frozen path: z0 = E_z(h), h_hat = D_h(z0 + sigma_dec eps)
            z0 = ae.encode(h, mask)
            if self.training:
                z0 = decoder_input_noise(z0, self.cfg.joint.sigma_dec, self.generator)
            h_hat = ae.decode_hidden(z0, ids.shape[1])
        ce = token_loss(ae, h_hat, ids, mask, self.cfg, step, self.generator)
        return ce, {"loss": ce.item(), "ce": ce.item()}


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
    prepare_head(model, train, dataclasses.replace(cfg, autoencoder_train=cfg.decoder_train), run_dir, progress)
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
