"""NUIDs: unique, unguessable 22-character ids for inboxes (random prefix, counting suffix)."""

from __future__ import annotations

import secrets

_DIGITS = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BASE = 62
_PREFIX = 12
_SEQ = 10
_MAX_SEQ = _BASE**_SEQ


def _encode(value: int, width: int) -> bytes:
    out = bytearray(width)
    for i in range(width - 1, -1, -1):
        value, digit = divmod(value, _BASE)
        out[i] = _DIGITS[digit]
    return bytes(out)


class Nuid:
    """A generator of NUIDs; each id is a new random prefix's sequence step (a new prefix when it wraps)."""

    def __init__(self) -> None:
        self._new_prefix()

    def _new_prefix(self) -> None:
        self._prefix = bytes(_DIGITS[secrets.randbelow(_BASE)] for _ in range(_PREFIX))
        self._seq = secrets.randbelow(_MAX_SEQ)
        self._step = 33 + secrets.randbelow(300)

    def next(self) -> bytes:
        """The next id: 22 base-62 characters."""
        self._seq += self._step
        if self._seq >= _MAX_SEQ:
            self._new_prefix()
        return self._prefix + _encode(self._seq, _SEQ)
