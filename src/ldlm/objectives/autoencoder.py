"""COSMOS stage 1 (Sec. 4.2.2): ``ce_weight CE(w, D_w(h_hat)) + mse_weight MSE(h, h_hat) [+ kl_weight KL]`` under
activation perturbations and latent dropout, and the held-out reconstruction accuracy every recipe reports."""

from __future__ import annotations

import torch
from torch import nn

from ldlm.data.sources import FeatureSource, normalized_features
from ldlm.objectives.augment import augmentation_strength, latent_dropout, perturb_activations
from ldlm.objectives.losses import kl_divergence, masked_mse, token_loss
from ldlm.pipeline import LatentDiffusionLM


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
        ce = token_loss(ae, h_hat, ids, mask, cfg, step, self.generator)
        loss = cfg.ce_weight * ce
        metrics = {"ce": ce.item(), "aug": strength}
        if not ae.identity_latents:
            mse = masked_mse(h_hat, h, mask)
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
