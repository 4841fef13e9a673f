"""Process resource limits that many-connection servers and load generators need."""

from __future__ import annotations

import os
import resource

_PAGE = os.sysconf("SC_PAGE_SIZE")


def raise_open_file_limit(wanted: int | None = None) -> int:
    """Raise the soft open-file limit to ``wanted`` (default: the hard limit) and return it.

    The limit is only raised up to the hard limit, never lowered; no exception is raised
    when it cannot go as high as asked (compare the returned value).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if wanted is None else wanted
    if hard != resource.RLIM_INFINITY:
        target = min(target, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` in bytes; raises OSError if there is no such process."""
    with open(f"/proc/{pid}/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * _PAGE
