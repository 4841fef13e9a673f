"""Newline-delimited JSON via msgspec, one decode call per batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from railcar.codecs.base import Buffer
from railcar.errors import CodecError, FrameTooLarge


class JsonLinesCodec:
    """One JSON document per line; items are whatever msgspec decodes into ``type``."""

    name = "jsonl"

    def __init__(self, type: Any = Any, max_line: int = 1024 * 1024) -> None:  # noqa: A002 - msgspec's name
        self._encoder = msgspec.json.Encoder()
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(type)
        self._max_line = max_line

    def encode_batch(self, items: Sequence[Any], out: bytearray) -> None:
        """Append one line per item; raises CodecError for an item JSON cannot represent."""
        try:
            out += self._encoder.encode_lines(items)
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            raise CodecError(f"cannot encode jsonl items: {exc}") from exc

    def decode_batch(self, buf: Buffer) -> tuple[list[Any], int]:
        """Return the complete lines' documents; raises CodecError or FrameTooLarge (line over max_line)."""
        data = buf if isinstance(buf, bytes | bytearray) else bytes(buf)
        end = data.rfind(b"\n") + 1
        if len(data) - end > self._max_line:
            raise FrameTooLarge(f"a JSON line exceeds {self._max_line} bytes")
        if not end:
            return [], 0
        try:
            items = self._decoder.decode_lines(memoryview(data)[:end])
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise CodecError(f"invalid JSON line: {exc}") from exc
        if end > self._max_line and self._longest_line(data, end) > self._max_line:
            raise FrameTooLarge(f"a JSON line exceeds {self._max_line} bytes")
        return items, end

    @staticmethod
    def _longest_line(data: bytes | bytearray, end: int) -> int:
        longest, start = 0, 0
        while start < end:
            stop = data.index(b"\n", start)
            longest = max(longest, stop - start)
            start = stop + 1
        return longest
