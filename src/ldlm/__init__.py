"""ldlm: latent diffusion language models (COSMOS two-stage; LDLM joint training)."""

from __future__ import annotations

from ldlm import _moved

_moved.install()  # old import paths of moved modules keep working, with a DeprecationWarning

__version__ = "0.1.0"
__all__ = ["LatentDiffusionLM", "load_config"]


def __getattr__(name: str):  # lazy: `import ldlm` stays cheap (no torch/transformers import)
    if name == "LatentDiffusionLM":
        from ldlm.pipeline import LatentDiffusionLM

        return LatentDiffusionLM
    if name == "load_config":
        from ldlm.config import load_config

        return load_config
    raise AttributeError(f"module 'ldlm' has no attribute {name!r}")
