"""Length-prefixed items: ``u32 little-endian length | bytes``; raw frames and msgpack."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import msgspec

from railcar.codecs.base import Buffer
from railcar.errors import CodecError, FrameTooLarge

_LENGTH = struct.Struct("<I")


def _split(buf: Buffer, max_item: int) -> tuple[list[memoryview], int]:
    """Return views of the complete items at the start of ``buf`` and the bytes they used."""
    view = memoryview(buf)
    unpack = _LENGTH.unpack_from
    items: list[memoryview] = []
    offset, end = 0, len(view)
    while end - offset >= 4:
        (size,) = unpack(view, offset)
        if size > max_item:
            raise FrameTooLarge(f"item of {size} bytes exceeds the limit of {max_item}")
        stop = offset + 4 + size
        if stop > end:
            break
        items.append(view[offset + 4 : stop])
        offset = stop
    return items, offset


class FramesCodec:
    """Raw byte strings, each prefixed by its length; items decode to ``bytes``."""

    name = "frames"

    def __init__(self, max_item: int = 16 * 1024 * 1024) -> None:
        self._max_item = max_item

    def encode_batch(self, items: Sequence[Any], out: bytearray) -> None:
        """Append each item with its length; raises CodecError for a non-bytes or oversized item."""
        pack = _LENGTH.pack
        for item in items:
            try:
                size = len(item)
                if size > self._max_item:
                    raise CodecError(f"item of {size} bytes exceeds the limit of {self._max_item}")
                out += pack(size)
                out += item
            except TypeError as exc:
                raise CodecError(f"frames items must be bytes-like: {exc}") from exc

    def decode_batch(self, buf: Buffer) -> tuple[list[Any], int]:
        """Return the complete items as bytes; raises FrameTooLarge for a length over the limit."""
        views, used = _split(buf, self._max_item)
        return [view.tobytes() for view in views], used


class MsgpackCodec:
    """msgspec msgpack documents, each prefixed by its length."""

    name = "msgpack"

    def __init__(self, type: Any = Any, max_item: int = 16 * 1024 * 1024) -> None:  # noqa: A002 - msgspec's name
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(type)
        self._max_item = max_item

    def encode_batch(self, items: Sequence[Any], out: bytearray) -> None:
        """Append each item with its length; raises CodecError for an item msgpack cannot represent."""
        encode_into = self._encoder.encode_into
        for item in items:
            start = len(out)
            out += b"\0\0\0\0"
            try:
                encode_into(item, out, -1)
            except (TypeError, ValueError, msgspec.EncodeError) as exc:
                del out[start:]
                raise CodecError(f"cannot encode msgpack item: {exc}") from exc
            size = len(out) - start - 4
            if size > self._max_item:
                del out[start:]
                raise CodecError(f"item of {size} bytes exceeds the limit of {self._max_item}")
            _LENGTH.pack_into(out, start, size)

    def decode_batch(self, buf: Buffer) -> tuple[list[Any], int]:
        """Return the complete documents; raises CodecError (invalid msgpack) or FrameTooLarge."""
        views, used = _split(buf, self._max_item)
        decode = self._decoder.decode
        try:
            return [decode(view) for view in views], used
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise CodecError(f"invalid msgpack item: {exc}") from exc
