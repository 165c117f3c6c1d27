"""Shared fixtures: ONE tiny COSMOS run for the whole session, trained through the real CLI.

``tiny_run`` calls ``ldlm.cli.main(["train", "tiny", ...])`` once (about 15-30 s on 2 CPU cores). The
recipe entry is wrapped so that the in-memory trained model is kept as well, which lets the pipeline
tests compare the trained object with what was saved, and the CLI tests check the command itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The test tensors are tiny: intra-op threads only add synchronisation, which on a small, busy CPU makes
# every op ~100x slower (the tiny run: ~7 s with 1 thread vs ~60 s with 2 under load).
torch.set_num_threads(int(os.environ.get("LDLM_TEST_THREADS", "1")))


@dataclasses.dataclass
class TinyRun:
    rc: int
    stdout: str
    stderr: str
    run_dir: Path
    cfg: object
    model: object
    summary: dict


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    from ldlm import cli
    from ldlm.recipes import RECIPES

    root = tmp_path_factory.mktemp("tiny_run")
    kept: dict = {}
    real = RECIPES["cosmos"]

    def keeping(cfg, **kwargs):
        model, summary = real(cfg, **kwargs)
        kept.update(cfg=cfg, model=model, summary=summary, kwargs=kwargs)
        return model, summary

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(RECIPES, "cosmos", keeping)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main(["train", "tiny", f"output_dir={root}/{{name}}", "--quiet"])
    assert rc == 0, f"`ldlm train tiny` failed:\n{err.getvalue()}"
    assert kept["kwargs"] == {"progress": False}, "--quiet must turn progress bars off"
    return TinyRun(
        rc=rc,
        stdout=out.getvalue(),
        stderr=err.getvalue(),
        run_dir=root / "tiny",
        cfg=kept["cfg"],
        model=kept["model"],
        summary=kept["summary"],
    )


def load_script(name: str):
    """``scripts/NAME.py`` imported as a module (the scripts are not part of the package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
