"""Newline-delimited JSON via msgspec: one encode call and one decode call per batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from railcar.codecs.base import Buffer
from railcar.codecs.invalid import MSGSPEC_INVALID, invalid
from railcar.errors import CodecError, FrameTooLarge

DEFAULT_MAX_LINE = 1024 * 1024
# How much of a memoryview is copied at a time when looking for a newline (it has no rfind).
_CHUNK = 64 * 1024


def _rfind_newline(buf: Buffer, lo: int, hi: int) -> int:
    """Return the index of the last newline in ``buf[lo:hi]``, or -1."""
    if isinstance(buf, bytes | bytearray):
        return buf.rfind(b"\n", lo, hi)
    # Search back a chunk at a time, copying only what is searched.
    while hi > lo:
        start = max(lo, hi - _CHUNK)
        found = buf[start:hi].tobytes().rfind(b"\n")
        if found >= 0:
            return start + found
        hi = start
    return -1


def _check_lines(buf: Buffer, end: int, max_line: int) -> None:
    """Raise FrameTooLarge if a line of ``buf[:end]`` (which ends with a newline) is over ``max_line``."""
    pos = 0
    # Each step skips to the last newline within reach of a longest line, so a step
    # covers many short lines and the work is about one pass over the bytes.
    while end - pos > max_line + 1:
        found = _rfind_newline(buf, pos, pos + max_line + 1)
        if found < 0:
            raise FrameTooLarge(f"a JSON line exceeds the limit of {max_line} bytes")
        pos = found + 1


class JsonLinesCodec:
    """One JSON document per line; items are whatever msgspec decodes into ``type``.

    Blank lines are skipped, as msgspec's ``decode_lines`` does.  JSON has no NaN or
    infinity: msgspec encodes them as ``null``; bytes travel as base64 strings, dict keys
    as strings and sets as lists, so they come back changed (msgpack keeps them).
    """

    name = "jsonl"

    def __init__(self, type: Any = Any, max_line: int = DEFAULT_MAX_LINE) -> None:  # noqa: A002 - msgspec's name
        """Decode into ``type``; refuse lines over ``max_line`` bytes, newline excluded; raises ValueError."""
        if max_line < 0:
            raise ValueError(f"max_line must not be negative, not {max_line}")
        self.max_line = max_line
        self._encoder = msgspec.json.Encoder()
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(type)

    def encode_batch(self, items: Sequence[Any], out: bytearray) -> None:
        """Append one line per item; raises CodecError or FrameTooLarge (line too long), ``out`` unchanged."""
        try:
            lines = self._encoder.encode_lines(items)
        except (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError) as exc:
            raise CodecError(f"cannot encode jsonl items: {exc}") from exc
        if len(lines) > self.max_line + 1:
            _check_lines(lines, len(lines), self.max_line)
        out += lines

    def decode_batch(self, buf: Buffer) -> tuple[list[Any], int]:
        """Return the documents of the complete lines; raises CodecError or FrameTooLarge (line too long)."""
        size, max_line = len(buf), self.max_line
        # The tail after the last newline may hold at most max_line bytes, so look no further back.
        end = _rfind_newline(buf, max(0, size - max_line - 1), size) + 1
        if size - end > max_line:
            raise FrameTooLarge(f"a JSON line exceeds the limit of {max_line} bytes")
        if not end:
            return [], 0
        if end > max_line + 1:
            _check_lines(buf, end, max_line)
        try:
            with memoryview(buf) as view:
                # One call for the whole batch; a view, because slicing bytes would copy them.
                items: list[Any] = self._decoder.decode_lines(view[:end])
        except MSGSPEC_INVALID as exc:
            raise invalid("JSON line", exc) from exc
        return items, end

    def decode_each(self, buf: Buffer) -> tuple[list[Any | CodecError], int]:
        """Return the documents of the complete lines and the bytes used; raises nothing.

        A line that cannot be decoded, or is over the limit, is one item: its CodecError.
        """
        data = bytes(buf)
        end = data.rfind(b"\n") + 1
        items: list[Any | CodecError] = []
        for line in data[:end].split(b"\n")[:-1]:  # the last part is what follows the last newline
            items += self._decode_line(line)
        return items, end

    def _decode_line(self, line: bytes) -> list[Any | CodecError]:
        # decode_lines, as decode_batch: a blank line is no item, "1 2" two.
        if len(line) > self.max_line:
            return [FrameTooLarge(f"a JSON line exceeds the limit of {self.max_line} bytes")]
        try:
            items: list[Any | CodecError] = self._decoder.decode_lines(line)
        except MSGSPEC_INVALID as exc:
            return [invalid("JSON line", exc)]
        return items
