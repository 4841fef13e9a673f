"""Picking one of several implementations of a part (a parser, an executor) by name, ``auto`` included."""

from __future__ import annotations

from collections.abc import Callable, Sequence


def choose(kind: str, kinds: Sequence[str], available: Callable[[str], bool], what: str) -> str:
    """``kind``, or for ``auto`` the first of ``kinds`` available here.

    Raises ValueError for a kind not in ``kinds`` or one not available here (saying how a
    ``c`` one is built).
    """
    if kind == "auto":
        kind = next(k for k in kinds if available(k))
    if kind not in kinds:
        raise ValueError(f"{what} must be auto, {', '.join(kinds)}, not {kind!r}")
    if not available(kind):
        why = "not built: scripts/install-tools, then pip install -e ." if kind == "c" else "not installed"
        raise ValueError(f"the {kind} {what} is not available here ({why})")
    return kind
