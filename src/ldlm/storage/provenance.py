"""Which code produced a result: the package version and, in a git checkout, the commit and whether the tree had
uncommitted changes. Written into every run's ``summary.json`` so that a figure can be traced to its code and a
stale run told from a current one."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

__all__ = ["code_revision"]


def _git(*args: str, cwd: Path) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.cache
def code_revision() -> dict:
    """``{"version", "git_commit", "git_dirty"}``, read once per process (the code a process loaded is the code at
    its start, so ``ldlm`` calls this first); the git fields are None outside a git checkout (a wheel install).
    ``git_dirty``: a tracked file of the package itself differs from the commit (results and docs do not count)."""
    from ldlm import __version__

    here = Path(__file__).resolve().parent.parent  # the ldlm package directory
    commit = _git("rev-parse", "HEAD", cwd=here)
    status = None if commit is None else _git("status", "--porcelain", "--untracked-files=no", "--", ".", cwd=here)
    dirty = None if status is None else bool(status)  # only the package's own files count
    return {"version": __version__, "git_commit": commit, "git_dirty": dirty}
