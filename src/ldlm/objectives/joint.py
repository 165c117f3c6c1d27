"""LDLM's joint objective (LDLM Sec. 4-5): ``L = L_diff + lambda_h L_h + L_w`` (Eq. 4; lambda_h:
:func:`hidden_loss_weight`) on E_z, D_h, D_w and the denoiser together, and its held-out validation.

``L_h = ||h - D_h(z0 + sigma_dec eps)||^2`` (Eq. 2) is the only reconstruction signal into E_z; ``L_w`` is the
token cross-entropy on ``sg(h_hat)`` (Eq. 3); ``L_diff`` (Eq. 1) is trained on the live ``z0``, whose gradient to
E_z is scaled by the warmup gamma(s) (App. A.2). Table 1's reconstruction ablations are ``joint.reconstruction``.
With ``autoencoder.latent_encoder=identity`` (TEncDM-like) z0 = h, there is no E_z/D_h to train and no L_h.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ldlm.config import RunConfig
from ldlm.data.sources import FeatureSource, normalized_features
from ldlm.diffusion import diffusion_loss
from ldlm.diffusion.timesteps import timestep_sampler_for
from ldlm.objectives.augment import decoder_input_noise
from ldlm.objectives.autoencoder import reconstruction_accuracy
from ldlm.objectives.diffusion import validation_diffusion_loss
from ldlm.objectives.losses import masked_mse, token_loss
from ldlm.objectives.warmup import scale_encoder_gradient, warmup_gamma
from ldlm.pipeline import LatentDiffusionLM


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
            terms["mse"] = masked_mse(h_hat, h, mask)
        if not joint.skip_token_decoder:  # L_w (Eq. 3): on sg(h_hat) unless a Table 1 CE ablation asks otherwise
            h_in = h_hat.detach() if joint.reconstruction == "mse" else h_hat
            terms["ce"] = token_loss(ae, h_in, ids, mask, self.cfg.autoencoder, step, self.generator)
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
        self._last_t = t.detach()
        return terms, z0

    def forward(self, batch: dict, step: int) -> tuple[torch.Tensor, dict]:
        terms, z0 = self._objective(batch, step)
        loss = sum(self.hidden_weight * v if k == "mse" else v for k, v in terms.items())
        metrics = {"loss": loss.item(), **{k: v.item() for k, v in terms.items()}}
        metrics.update(gamma=self.gamma(step), latent_std=z0.detach().std(0).mean().item())
        # the drawn-t histogram in three bands, logged beside latent_std (issue 22: does the sampler starve a range
        # while the latents shrink?)
        t = self._last_t
        metrics.update(t_below_02=(t < 0.2).float().mean().item(), t_above_05=(t > 0.5).float().mean().item())
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
