"""Gaussian diffusion in latent space: schedules, timestep samplers, denoisers, samplers."""

from ldlm.diffusion.denoiser import build_denoiser, diffusion_loss
from ldlm.diffusion.schedule import build_schedule
from ldlm.diffusion.timesteps import build_timestep_sampler
from ldlm.sampling.samplers import SAMPLERS, sample_latents

__all__ = [
    "SAMPLERS",
    "build_denoiser",
    "build_schedule",
    "build_timestep_sampler",
    "diffusion_loss",
    "sample_latents",
]
