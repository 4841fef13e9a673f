"""msgpack documents via msgspec, each prefixed by its length: ``u32 little-endian length | msgpack``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from railcar.codecs.base import Buffer
from railcar.codecs.frames import (
    DEFAULT_MAX_ITEM,
    LENGTH,
    check_max_item,
    split_each,
    split_items,
    too_large,
)
from railcar.codecs.invalid import MSGSPEC_INVALID, invalid
from railcar.errors import CodecError, FrameTooLarge

_PLACEHOLDER = bytes(LENGTH.size)


class MsgpackCodec:
    """msgpack documents, each prefixed by its length; items are whatever msgspec decodes into ``type``."""

    name = "msgpack"

    def __init__(self, type: Any = Any, max_item: int = DEFAULT_MAX_ITEM) -> None:  # noqa: A002 - msgspec's name
        """Decode into ``type``, refusing items over ``max_item`` bytes; raises ValueError (not a u32)."""
        self.max_item = check_max_item(max_item)
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(type)

    def encode_batch(self, items: Sequence[Any], out: bytearray) -> None:
        """Append each item with its length; raises CodecError or FrameTooLarge, leaving ``out`` unchanged."""
        start = len(out)
        encode_into, pack_into, max_item = self._encoder.encode_into, LENGTH.pack_into, self.max_item
        try:
            for item in items:
                # Reserve the length, encode in place after it, then fill the length in.
                at = len(out)
                out += _PLACEHOLDER
                encode_into(item, out, -1)
                size = len(out) - at - 4
                if size > max_item:
                    raise FrameTooLarge(f"item of {size} bytes exceeds the limit of {max_item}")
                pack_into(out, at, size)
        except (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError) as exc:
            del out[start:]
            if isinstance(exc, CodecError):
                raise
            raise CodecError(f"cannot encode msgpack item: {exc}") from exc

    def decode_batch(self, buf: Buffer) -> tuple[list[Any], int]:
        """Return the complete documents; raises CodecError (invalid msgpack) or FrameTooLarge."""
        failure: BaseException | None = None
        items: list[Any] = []
        # The views are gone before anything is raised: a traceback holding one would keep
        # a bytearray buffer from being resized for as long as the exception is kept.
        with memoryview(buf) as view:
            views, used, oversized = split_items(view, self.max_item)
            try:
                # map, not a comprehension: no Python frame of ours left holding a view.
                items = list(map(self._decoder.decode, views))
            except MSGSPEC_INVALID as exc:
                failure = invalid("msgpack item", exc)
            del views
        if failure is not None:
            raise failure
        if oversized >= 0:
            raise too_large(oversized, self.max_item)
        return items, used

    def decode_each(self, buf: Buffer) -> tuple[list[Any | CodecError], int]:
        """Return the complete documents, each that cannot be decoded as its CodecError, and the bytes used.

        Raises nothing; the bytes are copied once, so no view outlives the call.
        """
        parts, used = split_each(bytes(buf), self.max_item)
        return [self._decode_one(part) if isinstance(part, bytes) else part for part in parts], used

    def _decode_one(self, item: bytes) -> Any | CodecError:
        try:
            return self._decoder.decode(item)
        except MSGSPEC_INVALID as exc:
            return invalid("msgpack item", exc)
