"""Baselines the latent diffusion models are measured against: the autoregressive transformer of ``recipe: ar``."""

from ldlm.baselines.ar import ARLanguageModel, ARTransformer

__all__ = ["ARLanguageModel", "ARTransformer"]
