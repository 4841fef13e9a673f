"""The request–response wire format, sans I/O: frames in, frames out, no sockets or clocks.

Every frame is ``u32 length | u8 kind | u32 count | u64 first_id | payload`` (little
endian; ``length`` counts the bytes after itself).  A REQUEST frame carries
``count`` requests encoded back to back by the connection's codec, with the
consecutive ids ``first_id .. first_id + count - 1``.  Replies come back as
REPLY frames (the same consecutive ids, in order) or, when they complete out of
order, as REPLY_IDS frames whose payload starts with ``count`` u64 ids.  An ERROR
frame holds ``count`` entries ``u64 first_id | u32 ids | u32 size | message``, each
failing a run of consecutive requests (one, or a whole frame: its size does not grow
with the frame's); CONN_ERROR says why the sender closes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from railcar.errors import ProtocolError

HEADER: Final = struct.Struct("<IBIQ")
HEADER_SIZE: Final = HEADER.size  # 17
_AFTER_LENGTH: Final = HEADER_SIZE - 4
_ERROR_ENTRY: Final = struct.Struct("<QII")  # first id, how many ids, message size

REQUEST: Final = 1
REPLY: Final = 2
REPLY_IDS: Final = 3
ERROR: Final = 4
CONN_ERROR: Final = 5
KINDS: Final = frozenset({REQUEST, REPLY, REPLY_IDS, ERROR, CONN_ERROR})

DEFAULT_MAX_FRAME: Final = 64 * 1024 * 1024


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs three times as much
class Frame:
    """One decoded frame; ``payload`` is an independent copy of the frame's bytes."""

    kind: int
    count: int
    first_id: int
    payload: bytes


class FrameReader:
    """Splits a byte stream into frames, keeping an incomplete tail between reads."""

    __slots__ = ("_max_frame", "_tail")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._max_frame = max_frame
        self._tail = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame waiting for the rest."""
        return len(self._tail)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Return every frame completed by ``data``; raises ProtocolError on an invalid header."""
        tail = self._tail
        if tail:
            tail += data
            view = memoryview(tail)
        else:
            view = memoryview(data)
        frames: list[Frame] = []
        offset, end = 0, len(view)
        unpack = HEADER.unpack_from
        max_frame = self._max_frame
        with view:
            while end - offset >= HEADER_SIZE:
                length, kind, count, first_id = unpack(view, offset)
                if length < _AFTER_LENGTH or length > max_frame:
                    raise ProtocolError(f"frame length {length} outside {_AFTER_LENGTH}..{max_frame} bytes")
                if kind not in KINDS:
                    raise ProtocolError(f"unknown frame kind {kind}")
                stop = offset + 4 + length
                if stop > end:
                    break
                frames.append(Frame(kind, count, first_id, view[offset + HEADER_SIZE : stop].tobytes()))
                offset = stop
            if not tail and offset < end:
                tail += view[offset:]
                return frames
        if tail:
            del tail[:offset]  # one compaction per read, not per frame
        return frames


def begin_frame(out: bytearray) -> int:
    """Reserve a header at the end of ``out`` and return its position for ``end_frame``."""
    start = len(out)
    out += bytes(HEADER_SIZE)
    return start


def end_frame(out: bytearray, start: int, kind: int, count: int, first_id: int) -> None:
    """Fill in the header reserved at ``start`` once the payload has been appended."""
    HEADER.pack_into(out, start, len(out) - start - 4, kind, count, first_id)


def frame_header(kind: int, count: int, first_id: int, payload_size: int) -> bytes:
    """Return the header of a frame whose payload of ``payload_size`` bytes follows it."""
    return HEADER.pack(_AFTER_LENGTH + payload_size, kind, count, first_id)


def append_frame(out: bytearray, kind: int, count: int, first_id: int, payload: bytes) -> None:
    """Append one complete frame with a ready-made payload."""
    out += frame_header(kind, count, first_id, len(payload))
    out += payload


def encode_errors(out: bytearray, errors: list[tuple[int, str]]) -> None:
    """Append an ERROR frame failing each (request id, message); one entry per run sharing a message."""
    runs: list[tuple[int, int, str]] = []
    for request_id, message in errors:
        if runs and runs[-1][2] == message and runs[-1][0] + runs[-1][1] == request_id:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1, message)
        else:
            runs.append((request_id, 1, message))
    encode_run_errors(out, runs)


def encode_run_errors(out: bytearray, runs: list[tuple[int, int, str]]) -> None:
    """Append an ERROR frame failing each (first id, how many ids, message) run of requests."""
    start = begin_frame(out)
    for first_id, count, message in runs:
        text = message.encode("utf-8", "replace")
        out += _ERROR_ENTRY.pack(first_id, count, len(text))
        out += text
    end_frame(out, start, ERROR, len(runs), runs[0][0] if runs else 0)


def decode_errors(frame: Frame, widest: int = 2**32 - 1) -> list[tuple[int, int, str]]:
    """Return the (first id, how many ids, message) runs of an ERROR frame; raises ProtocolError.

    A run of more than ``widest`` ids (a receiver's largest frame) breaks the protocol.
    """
    entries: list[tuple[int, int, str]] = []
    payload, offset = frame.payload, 0
    try:
        for _ in range(frame.count):
            first_id, count, size = _ERROR_ENTRY.unpack_from(payload, offset)
            if count > widest:
                raise ProtocolError(f"ERROR entry fails {count} requests, more than one frame holds")
            offset += _ERROR_ENTRY.size
            if offset + size > len(payload):
                raise ProtocolError("truncated ERROR frame")
            entries.append((first_id, count, payload[offset : offset + size].decode("utf-8", "replace")))
            offset += size
    except struct.error as exc:
        raise ProtocolError("truncated ERROR frame") from exc
    if offset != len(payload):
        raise ProtocolError("ERROR frame has trailing bytes")
    return entries


def encode_conn_error(out: bytearray, message: str) -> None:
    """Append a CONN_ERROR frame: the sender closes the connection after it."""
    append_frame(out, CONN_ERROR, 0, 0, message.encode("utf-8", "replace"))


def split_ids(frame: Frame) -> tuple[list[int], bytes]:
    """Return the ids and the item payload of a REPLY_IDS frame; raises ProtocolError."""
    size = 8 * frame.count
    if len(frame.payload) < size:
        raise ProtocolError("REPLY_IDS frame shorter than its ids")
    ids = list(struct.unpack_from(f"<{frame.count}Q", frame.payload))
    return ids, frame.payload[size:]


def decode_replies(
    frame: Frame, decode: Callable[[bytes], tuple[list[Any], int]]
) -> tuple[Sequence[int], list[Any]]:
    """Return the ids and decoded replies of a REPLY or REPLY_IDS frame; raises ProtocolError.

    ``decode`` is the connection codec's ``decode_batch``; the frame must hold exactly
    one reply per id and nothing else.
    """
    ids: Sequence[int]
    if frame.kind == REPLY_IDS:
        ids, payload = split_ids(frame)
    else:
        ids, payload = range(frame.first_id, frame.first_id + frame.count), frame.payload
    replies, used = decode(payload)
    if used != len(payload) or len(replies) != len(ids):
        raise ProtocolError(f"reply frame holds {len(replies)} replies for {len(ids)} ids")
    return ids, replies


def pack_ids(ids: list[int]) -> bytes:
    """Encode the id prefix of a REPLY_IDS frame."""
    return struct.pack(f"<{len(ids)}Q", *ids)
