"""Latent diffusion's objective on the frozen autoencoder's latents (COSMOS App. C.1): the standardised latents of
the training texts, x0-prediction MSE with self-conditioning (``diffusion_loss``) at t from the configured sampler,
and the held-out loss on a fixed t grid. Seq2seq batches add the source (cross-attention, condition dropout)."""

from __future__ import annotations

import torch
from torch import nn

from ldlm.data.sources import FeatureSource, normalized_features
from ldlm.diffusion import diffusion_loss
from ldlm.diffusion.timesteps import timestep_sampler_for
from ldlm.pipeline import LatentDiffusionLM


@torch.no_grad()
def encode_latents(
    model: LatentDiffusionLM, texts: list[str] | FeatureSource, batch_size: int = 128, cache: bool = True
) -> torch.Tensor:
    """Raw (unnormalised) latents z: (n, N, d) of ``texts`` (or of the rows of a source) with the frozen
    autoencoder, no augmentation."""
    source = texts if isinstance(texts, FeatureSource) else FeatureSource(model, texts, cache)
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
