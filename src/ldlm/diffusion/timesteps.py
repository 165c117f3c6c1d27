"""Training timestep samplers, chosen by ``diffusion.timestep_sampler`` (the adaptive one is LDLM's)."""

from __future__ import annotations

import torch


class UniformTimesteps:
    """t ~ U(0, t_max) (COSMOS)."""

    def __init__(self, t_max: float = 0.999):
        self.t_max = t_max

    def sample(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.rand(batch, generator=generator) * self.t_max

    def update(self, t: torch.Tensor, loss: torch.Tensor) -> None:
        """Uniform sampling ignores the losses (the adaptive sampler uses them)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def build_timestep_sampler(name: str, t_max: float) -> UniformTimesteps:
    if name == "uniform":
        return UniformTimesteps(t_max)
    raise ValueError(f"diffusion.timestep_sampler={name!r} is unknown: use uniform")
