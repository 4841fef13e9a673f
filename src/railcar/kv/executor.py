"""Which executor runs a batch's hot requests: railcar's C one (``kv/_exec.c``) or none (Python).

The C executor runs the plain case of GET, SET, INCR, LPUSH/RPUSH and LPOP/RPOP straight
from a parsed batch, with the Python commands' replies and store changes, and hands back
the first request that is anything else (see ``_exec.c``).  ``python`` runs every request
through the Python commands: the reference, and the fallback where the C one is not built.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from railcar.choices import choose
from railcar.kv.store import ELEMENT_OVERHEAD, INT_SIZE, KEY_OVERHEAD

if TYPE_CHECKING:
    from railcar.kv.store import Database

#: ``run(batch, start, db, out, resp3, flush_at)``: the index of the first request not run.
RunHot = Callable[[list[list[bytes]], int, "Database", bytearray, bool, int], int]

EXECUTORS: Final = ("c", "python")

_c: Any
try:  # built at install when a compiler is there (hatch_build.py)
    from railcar.kv import _exec as _c
except ImportError:  # pragma: no cover - depends on the build
    _c = None
else:
    _c.configure(deque, KEY_OVERHEAD, ELEMENT_OVERHEAD, INT_SIZE)


def executor_available(kind: str) -> bool:
    """True if executor ``kind`` (one of EXECUTORS) can be used here."""
    return kind == "python" or (kind == "c" and _c is not None)


def new_executor(kind: str = "auto") -> RunHot | None:
    """The C executor's ``run``, or None for the Python path; ``auto``: C where built.

    Raises ValueError for an unknown kind or one not available here.
    """
    if choose(kind, EXECUTORS, executor_available, "executor") == "c":
        run: RunHot = _c.run
        return run
    return None
