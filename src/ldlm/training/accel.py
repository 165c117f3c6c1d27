"""GPU-only fast paths named in the config: ``torch.compile`` of the denoiser and bf16 autocast while sampling.

Both stay off on CPU: compiling takes minutes and gains little on CPU-sized models, and bf16 matmuls are slow on
CPUs without AMX. ``train.compile`` / ``sample.compile`` set on a CPU run warn once and run the denoiser eagerly.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

_COMPILED = "_ldlm_compiled"  # attribute set on a module compiled here (compile once, however often asked)


def compile_denoiser(module: nn.Module | None, *, enabled: bool, device: torch.device | str, field: str) -> bool:
    """Compile ``module`` in place (``nn.Module.compile``: same parameters and state-dict keys) when ``enabled`` on
    CUDA; returns whether it is compiled. On CPU ``enabled`` only warns (``field`` names the config key)."""
    if not enabled or module is None:
        return False
    if torch.device(device).type != "cuda":
        warnings.warn(f"{field}=true is GPU-only: the denoiser runs eagerly on this CPU", stacklevel=2)
        return False
    if not getattr(module, _COMPILED, False):
        module.compile()
        setattr(module, _COMPILED, True)
    return True


def sampling_autocast(setting: str, device: torch.device | str) -> torch.dtype | None:
    """``sample.mixed_precision``: the autocast dtype of the denoiser calls (auto: bf16 on CUDA, none on CPU)."""
    if setting == "auto":
        setting = "bf16" if torch.device(device).type == "cuda" else "no"
    return {"no": None, "bf16": torch.bfloat16}[setting]


def cuda_sync() -> None:
    """Wait for queued CUDA work (a no-op where CUDA is unused), so that wall-clock timers cover the kernels."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
