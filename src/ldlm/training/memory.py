"""Process memory as the operating system sees it: peak and current resident set size (RSS), in GiB.

``ru_maxrss`` (kilobytes on Linux) is a high-water mark over the whole process life; on Linux it can be reset
(``5`` written to ``/proc/self/clear_refs``) so that one part of a run gets its own peak (``VmHWM``);
:func:`peak_rss_gib` still reports the whole life's peak, remembering the peaks that resets cleared.
"""

from __future__ import annotations

import resource
from pathlib import Path

KIB_PER_GIB = 2**20
_STATUS = Path("/proc/self/status")
_cleared = {"peak_gib": 0.0}  # the largest peak that a reset_peak_rss() call cleared


def peak_rss_gib(*, children: bool = True) -> float:
    """ru_maxrss of this process plus, with ``children``, that of its largest finished child (an upper bound)."""
    gib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB_PER_GIB, _cleared["peak_gib"])
    if children:
        gib += resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / KIB_PER_GIB
    return gib


def status_gib(field: str) -> float | None:
    """A ``/proc/self/status`` memory field (``VmRSS`` now, ``VmHWM`` peak) in GiB; None where there is none."""
    if not _STATUS.exists():
        return None
    for line in _STATUS.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / KIB_PER_GIB
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux >= 4.0); False where that is not possible."""
    before = status_gib("VmHWM") or 0.0
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    _cleared["peak_gib"] = max(_cleared["peak_gib"], before)
    return True
