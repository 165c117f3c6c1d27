"""Behaviour pin for restructuring (issue 24): the `tiny` preset's training losses and samples for a fixed seed.

A commit that only moves code must leave these unchanged. A commit that changes behaviour on purpose regenerates the
pin with ``LDLM_UPDATE_PIN=1 python -m pytest tests/test_tiny_pin.py`` and says so in its message.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

PIN = Path(__file__).parent / "data" / "tiny_pin.json"


def _losses(run_dir: Path, stage: str) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / stage / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def test_tiny_preset_losses_and_samples_are_pinned(tiny_run):
    observed = {
        "autoencoder_losses": _losses(tiny_run.run_dir, "autoencoder"),
        "diffusion_losses": _losses(tiny_run.run_dir, "diffusion"),
        "samples": tiny_run.model.generate(4, seed=0),
    }
    if os.environ.get("LDLM_UPDATE_PIN") == "1":
        PIN.write_text(json.dumps(observed, indent=1) + "\n")
    pinned = json.loads(PIN.read_text())
    for key in ("autoencoder_losses", "diffusion_losses"):
        assert observed[key] == pytest.approx(pinned[key], rel=1e-4), key
    assert observed["samples"] == pinned["samples"]
