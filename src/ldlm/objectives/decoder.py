"""Token-decoder post-training's objective (LDLM App. B.2): E_z, D_h and the denoiser stay fixed; a fresh token
decoder D_w learns ``CE(w, D_w(D_h(z0 + sigma_dec eps)))`` only (``joint.decoder_clean_fraction`` of the texts: from
the clean z0)."""

from __future__ import annotations

import torch
from torch import nn

from ldlm.config import RunConfig
from ldlm.data.sources import normalized_features
from ldlm.objectives.augment import decoder_input_noise
from ldlm.objectives.losses import token_loss
from ldlm.pipeline import LatentDiffusionLM


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
            fraction = self.cfg.joint.decoder_clean_fraction
            if self.training and fraction < 1:
                noisy = decoder_input_noise(z0, self.cfg.joint.sigma_dec, self.generator)
                if fraction > 0:  # (B,) texts that keep the clean z0
                    clean = torch.rand(z0.shape[0], generator=self.generator) < fraction
                    noisy = torch.where(clean.to(z0.device)[:, None, None], z0, noisy)
                z0 = noisy
            h_hat = ae.decode_hidden(z0, ids.shape[1])
        ce = token_loss(ae, h_hat, ids, mask, self.cfg.autoencoder, step, self.generator)
        return ce, {"loss": ce.item(), "ce": ce.item()}
