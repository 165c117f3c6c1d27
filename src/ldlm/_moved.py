"""Deprecation paths for code that moved (issue 24): old import paths keep working, with a DeprecationWarning.

Two kinds of move. A whole module that moved (``ldlm.train`` -> ``ldlm.training.train``) is listed in
:data:`MODULES`; the import hook that :func:`install` adds to ``sys.meta_path`` serves the old name as the *same*
module object as the new one, so that no shim file is left at the old path (the folder listing stays the design).
A name that left a module that still exists (``ldlm.recipes.cosmos.AutoencoderTask``) is served by that module's
``__getattr__ = moved_names(__name__, {...})``. docs/architecture.md ("Where things moved") lists both.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

# old module -> new module (whole-module moves)
MODULES: dict[str, str] = {
    "ldlm.benchmarks": "ldlm.apps.bench.benchmarks",
    "ldlm.throughput": "ldlm.apps.bench.throughput",
    "ldlm.gpu_check": "ldlm.apps.bench.gpu_check",
    "ldlm.bench_report": "ldlm.apps.bench.report",
    "ldlm.accel": "ldlm.training.accel",
    "ldlm.perceiver": "ldlm.model.perceiver",
    "ldlm.transformer": "ldlm.model.transformer",
    "ldlm.autoencoder": "ldlm.model.autoencoder",
    "ldlm.encoders": "ldlm.model.encoders",
    "ldlm.source_latents": "ldlm.model.source_latents",
    "ldlm.train": "ldlm.training.train",
    "ldlm.runstate": "ldlm.training.runstate",
    "ldlm.checkpoint": "ldlm.training.checkpoint",
    "ldlm.distributed": "ldlm.training.distributed",
    "ldlm.rng": "ldlm.training.rng",
    "ldlm.memory": "ldlm.training.memory",
    "ldlm.io": "ldlm.storage.io",
    "ldlm.hub": "ldlm.storage.hub",
    "ldlm.model_card": "ldlm.storage.model_card",
    "ldlm.resources": "ldlm.storage.resources",
    "ldlm.mbr": "ldlm.sampling.mbr",
    "ldlm.diffusion.samplers": "ldlm.sampling.samplers",
    "ldlm.report": "ldlm.evaluation.untrained",
    "ldlm.plots": "ldlm.reporting.plots",
    "ldlm.evaluation.figures": "ldlm.reporting.figures",
    "ldlm.evaluation.writer": "ldlm.reporting.writer",
    "ldlm.quickstart": "ldlm.apps.quickstart",
    "ldlm.ablation": "ldlm.apps.ablation",
    "ldlm.ablation.curves": "ldlm.apps.ablation.curves",
    "ldlm.ablation.run": "ldlm.apps.ablation.run",
    "ldlm.ablation.spec": "ldlm.apps.ablation.spec",
    "ldlm.ablation.table": "ldlm.apps.ablation.table",
    "ldlm.ablation.training": "ldlm.apps.ablation.training",
    "ldlm.encoder_warmup": "ldlm.objectives.warmup",
}


def _warn(old: str, new: str) -> None:
    warnings.warn(f"{old} moved to {new}; the old path will be removed", DeprecationWarning, stacklevel=3)


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old names of moved modules and loads them as the new module (the same object)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = MODULES[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; the old path will be removed", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module) -> None:  # the new module is already executed
        return None

    def get_code(self, fullname):  # ``python -m <old name>`` runs the new module's code
        new = MODULES[fullname]
        warnings.warn(f"{fullname} moved to {new}; run python -m {new}", DeprecationWarning, stacklevel=2)
        return importlib.util.find_spec(new).loader.get_code(new)

    def is_package(self, fullname) -> bool:
        return importlib.util.find_spec(MODULES[fullname]).submodule_search_locations is not None


def install() -> None:
    """Add the hook once (``import ldlm`` does this)."""
    if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
        sys.meta_path.append(_MovedModules())


def moved_names(module: str, names: dict[str, str]):
    """A module ``__getattr__`` that serves each old ``name`` from its new module ``names[name]``, warning once per
    access: ``__getattr__ = moved_names(__name__, {"AutoencoderTask": "ldlm.objectives.autoencoder"})``. A value
    ``"pkg.mod:new_name"`` serves a renamed object."""

    def __getattr__(name: str):
        if name not in names:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        target, _, new_name = names[name].partition(":")
        _warn(f"{module}.{name}", f"{target}.{new_name or name}")
        return getattr(importlib.import_module(target), new_name or name)

    return __getattr__
