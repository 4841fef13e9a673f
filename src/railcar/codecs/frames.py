"""Length-prefixed raw items: ``u32 little-endian length | bytes``."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, TypeVar

from railcar.codecs.base import Buffer
from railcar.errors import CodecError, FrameTooLarge

#: The length prefix of every item of the frames and msgpack codecs.
LENGTH = struct.Struct("<I")
DEFAULT_MAX_ITEM = 16 * 1024 * 1024
# Items of at most this many bytes on average are joined before appending.
_JOIN_AVERAGE = 512

_Data = TypeVar("_Data", bytes, memoryview)


def check_max_item(max_item: int) -> int:
    """Return ``max_item``; raises ValueError unless a u32 length can say it."""
    if not 0 <= max_item <= 0xFFFFFFFF:
        raise ValueError(f"max_item must be between 0 and {0xFFFFFFFF}, not {max_item}")
    return max_item


def split_items(data: _Data, max_item: int) -> tuple[list[_Data], int, int]:
    """Return slices of the complete items at the start of ``data``, the bytes they used, and -1.

    The walk stops at the first length over ``max_item``, before waiting for its bytes, and
    returns that length last instead of -1: the caller raises FrameTooLarge once it has let
    go of its views, so the exception does not keep a bytearray locked (exported).
    """
    unpack = LENGTH.unpack_from
    items: list[_Data] = []
    append = items.append
    offset, end = 0, len(data)
    # Walks offsets; each item costs one slice, whatever the size of the buffer.
    while end - offset >= 4:
        (size,) = unpack(data, offset)
        if size > max_item:
            return items, offset, size
        start = offset + 4
        if start + size > end:
            break
        offset = start + size
        append(data[start:offset])
    return items, offset, -1


def split_each(data: bytes, max_item: int) -> tuple[list[bytes | CodecError], int]:
    """Return the complete items at the start of ``data`` and the bytes they used; raises nothing.

    An item over ``max_item`` whose bytes are all there is its FrameTooLarge in the list:
    its length prefix still says where the next item starts.
    """
    items: list[bytes | CodecError] = []
    offset, end = 0, len(data)
    while end - offset >= 4:
        (size,) = LENGTH.unpack_from(data, offset)
        start = offset + 4
        if start + size > end:
            break
        offset = start + size
        items.append(data[start:offset] if size <= max_item else too_large(size, max_item))
    return items, offset


def too_large(size: int, max_item: int) -> FrameTooLarge:
    """Return the error for an item of ``size`` bytes over ``max_item``."""
    return FrameTooLarge(f"item of {size} bytes exceeds the limit of {max_item}")


class FramesCodec:
    """Raw byte strings, each prefixed by its length; items decode to ``bytes``."""

    name = "frames"

    def __init__(self, max_item: int = DEFAULT_MAX_ITEM) -> None:
        """Refuse items over ``max_item`` bytes; raises ValueError unless it fits a u32."""
        self.max_item = check_max_item(max_item)

    def encode_batch(self, items: Sequence[bytes], out: bytearray) -> None:
        """Append each item with its length; raises CodecError or FrameTooLarge, leaving ``out`` unchanged."""
        if not isinstance(items, list | tuple):
            items = list(items)  # read twice below: a generator would be empty the second time
        try:
            # len() of a memoryview counts elements, not bytes.
            sizes = [len(item) if type(item) is bytes else memoryview(item).nbytes for item in items]
        except TypeError as exc:
            raise CodecError(f"frames items must be bytes-like: {exc}") from exc
        if sizes and max(sizes) > self.max_item:
            raise too_large(max(sizes), self.max_item)
        start = len(out)
        try:
            if sum(sizes) <= _JOIN_AVERAGE * len(sizes):
                # Small items: one join is faster than two appends per item (measured 100 vs 155 us
                # for 1,000 items of 32 bytes) but copies the bytes twice, which large items feel.
                parts: list[Any] = [b""] * (2 * len(sizes))
                parts[0::2] = map(LENGTH.pack, sizes)
                parts[1::2] = items
                out += b"".join(parts)
            else:
                for prefix, item in zip(map(LENGTH.pack, sizes), items, strict=True):
                    out += prefix
                    out += item
        except (TypeError, BufferError) as exc:
            # A memoryview that is not contiguous has a size but no bytes to append.
            del out[start:]
            raise CodecError(f"frames items must be contiguous bytes-like objects: {exc}") from exc

    def decode_batch(self, buf: Buffer) -> tuple[list[bytes], int]:
        """Return the complete items as bytes; raises FrameTooLarge for a length over the limit."""
        if isinstance(buf, bytes):
            # Slicing bytes makes the item in one copy.
            items, used, oversized = split_items(buf, self.max_item)
        else:
            with memoryview(buf) as view:
                views, used, oversized = split_items(view, self.max_item)
                items = [view.tobytes() for view in views]
                del views
        if oversized >= 0:
            raise too_large(oversized, self.max_item)
        return items, used

    def decode_each(self, buf: Buffer) -> tuple[list[bytes | CodecError], int]:
        """Return the complete items and the bytes they used; raises nothing.

        An item over the limit is its FrameTooLarge; the copy leaves no view of ``buf`` behind.
        """
        return split_each(bytes(buf), self.max_item)
