"""Saved models on the Hugging Face Hub: resolve ``owner/name`` ids to a local snapshot, push a model in one commit.

A local path always wins when it exists; otherwise a string shaped like a hub id (``owner/name``) is fetched with
``huggingface_hub.snapshot_download``, which honours its cache (``HF_HUB_CACHE`` / ``HF_HOME``), ``HF_HUB_OFFLINE``,
``revision`` and ``token``. Only the files a saved model consists of are fetched (config, weights, card, results).

Pushing builds the whole list of files first (:func:`push_operations`, no network), then uploads them with one
``HfApi.create_commit``: the repository never holds half a model.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ldlm.storage.io import WeightFileError
from ldlm.storage.resources import hub_offline

__all__ = [
    "MODEL_FILES",
    "HubError",
    "PushPlan",
    "hub_cache_dir",
    "looks_like_hub_id",
    "push_model",
    "push_operations",
    "resolve_pretrained",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
EVAL_NAME = "eval_results.json"  # evaluation figures recorded by `ldlm evaluate` (see ldlm.storage.model_card)
SUMMARY_NAME = "summary.json"
MODEL_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME, EVAL_NAME, SUMMARY_NAME, "results/*.json")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class HubError(WeightFileError):
    """A hub id could not be resolved or a push could not start (offline, no token, bad id)."""


def looks_like_hub_id(name: str | os.PathLike) -> bool:
    """``owner/name`` with hub-legal characters (a path that does not exist locally may still be one)."""
    text = str(name)
    return bool(_HUB_ID.match(text)) and ".." not in text and not text.endswith((".", "-"))


def hub_cache_dir() -> Path | None:
    """The hub cache the environment names now (``HF_HUB_CACHE``, else ``HF_HOME``/hub), read at call time so
    a variable set after ``huggingface_hub`` was imported still counts; None: the library's default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return None


def resolve_pretrained(
    name_or_path: str | os.PathLike, *, revision: str | None = None, token: str | bool | None = None
) -> Path:
    """A local directory holding the saved model: ``name_or_path`` itself when it exists, else the hub snapshot of
    the id ``owner/name`` at ``revision`` (from the cache when ``HF_HUB_OFFLINE`` is set)."""
    path = Path(name_or_path).expanduser()
    if path.exists() or not looks_like_hub_id(name_or_path):
        return path  # the caller reports a missing local directory
    repo_id = str(name_or_path)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    at = f" at revision {revision!r}" if revision else ""
    offline = hub_offline()
    try:
        local = snapshot_download(
            repo_id,
            revision=revision,
            token=token,
            cache_dir=hub_cache_dir(),
            local_files_only=offline,
            allow_patterns=list(MODEL_FILES),
        )
    except RevisionNotFoundError as err:
        raise HubError(f"{repo_id!r} has no revision {revision!r}: name a branch, tag or commit of it") from err
    except GatedRepoError as err:
        raise HubError(f"{repo_id!r} is gated: accept its terms on the hub and pass token= (or set HF_TOKEN)") from err
    except RepositoryNotFoundError as err:
        raise HubError(
            f"{repo_id!r} is neither a local directory nor a hub model you can read: check the path, or the id "
            "(and pass token= / set HF_TOKEN for a private repository)"
        ) from err
    except LocalEntryNotFoundError as err:
        why = "HF_HUB_OFFLINE is set" if offline else "the hub is unreachable"
        raise HubError(
            f"{repo_id!r} is not a local directory, and it is not in the hub cache{at} ({hub_cache_dir() or 'default'})"
            f" while {why}: pass an existing model directory, or unset HF_HUB_OFFLINE where the hub is reachable"
        ) from err
    except (HfHubHTTPError, OSError) as err:
        raise HubError(f"could not fetch {repo_id!r}{at} from the hub: {err}") from err
    return Path(local)


# ---------------------------------------------------------------------------------------------------- push


@dataclass(frozen=True)
class PushPlan:
    """What one push uploads: repository path -> local file (card text rendered for the repository)."""

    files: dict[str, Path]
    card: str  # README.md content, with the commands rewritten to the repository id

    def operations(self) -> list:
        """The ``CommitOperationAdd`` list of the one commit (built without network)."""
        from huggingface_hub import CommitOperationAdd

        ops = [CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=self.card.encode("utf-8"))]
        ops += [CommitOperationAdd(path_in_repo=k, path_or_fileobj=str(v)) for k, v in sorted(self.files.items())]
        return ops


def push_operations(path: str | os.PathLike, repo_id: str) -> PushPlan:
    """Plan the upload of the saved model at ``path`` (a ``save_pretrained`` directory or a run directory):
    config, weights, a card naming ``repo_id`` in its commands, the run's ``summary.json``, the recorded evaluation
    figures and the evaluation reports they point to (as ``results/<file>.json``)."""
    from ldlm.pipeline import pretrained_dir
    from ldlm.storage.model_card import read_evaluations, render_card

    if not looks_like_hub_id(repo_id):
        raise HubError(f"--repo {repo_id!r} is not a hub id: name it owner/name")
    model_dir = pretrained_dir(path)
    if not (model_dir / WEIGHTS_NAME).is_file():
        raise HubError(f"{model_dir} has no {WEIGHTS_NAME}: nothing to push")
    files = {CONFIG_NAME: model_dir / CONFIG_NAME, WEIGHTS_NAME: model_dir / WEIGHTS_NAME}
    for summary in (model_dir / SUMMARY_NAME, model_dir.parent / SUMMARY_NAME):
        if summary.is_file():
            files[SUMMARY_NAME] = summary
            break
    if (model_dir / EVAL_NAME).is_file():
        files[EVAL_NAME] = model_dir / EVAL_NAME
    for record in read_evaluations(model_dir).values():
        report = Path(record.get("report") or "")
        if report.suffix == ".json" and report.is_file():
            files[f"results/{report.name}"] = report
    return PushPlan(files=files, card=render_card(model_dir, model_ref=repo_id))


def _push_token(token: str | None) -> str:
    """The token to push with, or a HubError when offline or none is available."""
    if hub_offline():
        raise HubError(
            "cannot push while HF_HUB_OFFLINE is set (the hub is offline): unset it where the hub is reachable"
        )
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise HubError("no Hugging Face token: run `hf auth login`, set HF_TOKEN, or pass --token / token=")
    return token


def push_model(
    path: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload the saved model at ``path`` to ``repo_id`` in ONE commit (the repository is created if needed);
    returns the commit's URL. Offline or without a token it fails before touching the network."""
    plan = push_operations(path, repo_id)  # local checks first: nothing uploaded when a file is missing
    token = _push_token(token)
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    message = commit_message or f"Upload ldlm model ({', '.join(sorted(plan.files))}, {CARD_NAME})"
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, token=token)
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True, token=token)
        info = api.create_commit(repo_id, plan.operations(), commit_message=message, revision=revision, token=token)
    except (HfHubHTTPError, OSError) as err:
        raise HubError(f"push to {repo_id!r} failed (nothing was committed): {err}") from err
    return str(getattr(info, "commit_url", info))
