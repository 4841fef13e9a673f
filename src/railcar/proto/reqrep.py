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

A client may open with a HELLO frame (count 0, first_id 0, no payload); the server
answers with a HELLO whose payload is ``u32 max_frame``, the largest frame length it
accepts.  A HELLO anywhere else, or carrying anything, breaks the protocol.  A frame
over the receiver's limit whose header is plausible can be skipped without losing the
stream (``FrameReader(skip_kinds=...)``); the server fails such a REQUEST frame's ids.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from railcar.errors import ProtocolError

HEADER: Final = struct.Struct("<IBIQ")
HEADER_SIZE: Final = HEADER.size  # 17
MIN_LENGTH: Final = HEADER_SIZE - 4  # the length field of a frame with no payload
_ERROR_ENTRY: Final = struct.Struct("<QII")  # first id, how many ids, message size

REQUEST: Final = 1
REPLY: Final = 2
REPLY_IDS: Final = 3
ERROR: Final = 4
CONN_ERROR: Final = 5
HELLO: Final = 6
KINDS: Final = frozenset({REQUEST, REPLY, REPLY_IDS, ERROR, CONN_ERROR, HELLO})
_HELLO_PAYLOAD: Final = struct.Struct("<I")  # the server's max_frame

DEFAULT_MAX_FRAME: Final = 64 * 1024 * 1024
MAX_ID: Final = 2**64  # ids are u64: a frame's ids end before this


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs three times as much
class Frame:
    """One decoded frame; ``payload`` is an independent copy of the frame's bytes.

    ``skipped`` counts the payload bytes discarded because the frame was over the
    reader's limit (``payload`` is then empty); 0 for every frame read whole.
    """

    kind: int
    count: int
    first_id: int
    payload: bytes
    skipped: int = 0


class FrameReader:
    """Splits a byte stream into frames, keeping an incomplete tail between reads.

    A frame over ``max_frame`` whose kind is in ``skip_kinds`` and whose header is
    plausible (see ``skippable``) is returned as soon as its header arrives, with an
    empty payload and ``skipped`` set; its payload is then discarded as it arrives,
    never buffered, so one oversized frame does not cost the connection.
    """

    __slots__ = ("_max_frame", "_skip", "_skip_kinds", "_skip_size", "_tail")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, skip_kinds: frozenset[int] = frozenset()) -> None:
        """Read frames of up to ``max_frame`` bytes; raises ValueError: ``skip_kinds`` not all kinds."""
        if not skip_kinds <= KINDS:
            raise ValueError(f"unknown frame kinds to skip: {sorted(skip_kinds - KINDS)}")
        self._max_frame = max_frame
        self._skip_kinds = skip_kinds
        self._tail = bytearray()
        self._skip = 0  # payload bytes of an oversized frame still to discard
        self._skip_size = 0  # that frame's whole size, its length field included

    @property
    def max_frame(self) -> int:
        """The largest frame length read whole."""
        return self._max_frame

    @property
    def buffered(self) -> int:
        """Bytes received of a frame not yet complete: kept for the rest, or of one being skipped."""
        if self._skip:
            return self._skip_size - self._skip
        return len(self._tail)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Return every frame completed or skipped by ``data``; raises ProtocolError on an invalid header."""
        if self._skip:
            data = self._discard(data)
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
                stop = offset + 4 + length
                if length < MIN_LENGTH or length > max_frame:
                    # A length under MIN_LENGTH gives a negative payload size: never plausible.
                    if kind not in self._skip_kinds or header_problem(count, first_id, length - MIN_LENGTH):
                        raise ProtocolError(f"frame length {length} outside {MIN_LENGTH}..{max_frame} bytes")
                    frames.append(Frame(kind, count, first_id, b"", length - MIN_LENGTH))
                    if stop > end:
                        self._skip, self._skip_size = stop - end, 4 + length
                        offset = end
                        break
                elif kind not in KINDS:
                    raise ProtocolError(f"unknown frame kind {kind}")
                elif stop > end:
                    break
                else:
                    frames.append(Frame(kind, count, first_id, view[offset + HEADER_SIZE : stop].tobytes()))
                offset = stop
            if not tail and offset < end:
                tail += view[offset:]
                return frames
        if tail:
            del tail[:offset]  # one compaction per read, not per frame
        return frames

    def _discard(self, data: bytes | bytearray | memoryview) -> memoryview:
        """Drop the next bytes of the frame being skipped from ``data``; return what follows them."""
        dropped = min(self._skip, len(data))
        self._skip -= dropped
        return memoryview(data)[dropped:]


def header_problem(count: int, first_id: int, payload_size: int) -> str | None:
    """Say why a frame header cannot be true whatever its kind; None when it can.

    Every codec spends at least one byte per request, so a count over the payload size is
    a lie (failing its ids one by one would turn 17 bytes into gigabytes of ERROR entries);
    ids are u64, so a frame's ids cannot pass 2**64.
    """
    if count > payload_size:
        return f"frame says {count} requests in {payload_size} bytes"
    if first_id + count > MAX_ID:
        return f"ids {first_id}+{count} pass 2**64"
    return None


def request_problem(frame: Frame) -> str | None:
    """Say why ``frame`` cannot be a client's REQUEST frame (a broken stream, not a bad request)."""
    if frame.kind != REQUEST:
        return f"expected REQUEST frames, got kind {frame.kind}"
    size = len(frame.payload) + frame.skipped
    problem = header_problem(frame.count, frame.first_id, size)
    if problem is not None:
        return f"REQUEST {problem}"
    if not frame.count and size:
        # No id to fail them with: answering would drop the bytes without a word.
        return f"REQUEST frame says 0 requests but carries {size} bytes"
    return None


def framing_problem(frame: Frame, decoded: int, used: int) -> str:
    """Say why ``decoded`` requests using ``used`` bytes of its payload are not the whole of ``frame``."""
    unused = len(frame.payload) - used
    if decoded == frame.count:
        return f"frame has {unused} unused bytes after its {decoded} requests"
    left_over = f" ({unused} bytes left over)" if unused else ""
    return f"frame holds {decoded} whole requests{left_over}, its header says {frame.count}"


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
    return HEADER.pack(MIN_LENGTH + payload_size, kind, count, first_id)


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


def encode_hello(out: bytearray, max_frame: int | None = None) -> None:
    """Append a HELLO frame: a client's empty one, or a server's answer stating its ``max_frame``."""
    # A length field is a u32: a larger limit is no limit, stated as the largest u32.
    payload = b"" if max_frame is None else _HELLO_PAYLOAD.pack(min(max_frame, 2**32 - 1))
    append_frame(out, HELLO, 0, 0, payload)


def decode_hello(frame: Frame) -> int:
    """Return the ``max_frame`` a server's HELLO frame states; raises ProtocolError on a bad one."""
    if frame.kind != HELLO or len(frame.payload) != _HELLO_PAYLOAD.size:
        raise ProtocolError(f"bad HELLO answer: kind {frame.kind}, {len(frame.payload)} payload bytes")
    (max_frame,) = _HELLO_PAYLOAD.unpack(frame.payload)
    return int(max_frame)


def hello_problem(frame: Frame, first: bool) -> str | None:
    """Say why a client's HELLO ``frame`` breaks the protocol (``first``: the connection's first frame)."""
    if not first:
        return "HELLO after the first frame"
    if frame.count or frame.first_id or frame.payload or frame.skipped:
        return "a client's HELLO carries nothing (count 0, first_id 0, no payload)"
    return None


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
