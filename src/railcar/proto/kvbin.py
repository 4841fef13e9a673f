"""railcar's compact binary key–value protocol (kvbin), sans I/O: both directions.

A request is ``opcode u8 | key length u16 | value length u16 | key | value``, big
endian; a reply is ``status u8 | length u16 | body``.  The opcodes are GET (value
length 0) and SET.  The statuses:

- ``OK``: SET stored the value (empty body), or GET found it (the body is the value);
- ``NOT_FOUND``: GET of a key that holds nothing (empty body);
- ``WRONG_TYPE``: GET of a key that holds a list, set or hash (written over RESP);
  the body is Redis's WRONGTYPE text and the connection stays open;
- ``TOO_LARGE``: GET of a string longer than a reply can carry (65,535 bytes; strings
  that long can only come from RESP); the body says how long it is; the connection stays;
- ``OOM``: SET refused because the store holds more than its ``maxmemory`` (the body is
  Redis's OOM text); reads go on and the connection stays;
- ``ERROR``: the request is malformed (an unknown opcode, a GET with a value); the body
  says why, and the server closes the connection after it, since nothing after a
  malformed header can be framed.

Requests are pipelined: the server answers them in order, and every reply to one
read goes out in one buffer.  A request is at most 131,075 bytes, so the bytes a
parser holds between reads are bounded by the framing itself.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from railcar.errors import ProtocolError

Buffer = bytes | bytearray | memoryview

GET: Final = 1
SET: Final = 2
OPCODES: Final = {GET: "GET", SET: "SET"}

OK: Final = 0
NOT_FOUND: Final = 1
WRONG_TYPE: Final = 2
TOO_LARGE: Final = 3
ERROR: Final = 4
OOM: Final = 5
STATUSES: Final = {
    OK: "OK",
    NOT_FOUND: "NOT_FOUND",
    WRONG_TYPE: "WRONG_TYPE",
    TOO_LARGE: "TOO_LARGE",
    ERROR: "ERROR",
    OOM: "OOM",
}

REQUEST_HEADER: Final = struct.Struct(">BHH")
REPLY_HEADER: Final = struct.Struct(">BH")
#: Longest key, value, or reply body: what a 2-byte length can say.
MAX_LENGTH: Final = 0xFFFF

#: The replies that carry no body, encoded once.
OK_REPLY: Final = REPLY_HEADER.pack(OK, 0)
NOT_FOUND_REPLY: Final = REPLY_HEADER.pack(NOT_FOUND, 0)


class Request(NamedTuple):
    """One parsed request: ``op`` is GET or SET; ``value`` is empty for GET."""

    op: int
    key: bytes
    value: bytes


class Reply(NamedTuple):
    """One parsed reply: a status and its body (the value, an error text, or empty)."""

    status: int
    body: bytes


class KvbinProtocolError(ProtocolError):
    """A malformed request; its text is the ERROR reply's body, and the connection closes after it."""


def encode_request(op: int, key: bytes, value: bytes = b"") -> bytes:
    """One request; raises ValueError for an unknown opcode, a GET with a value, a key or value too long."""
    if op not in OPCODES:
        raise ValueError(f"unknown kvbin opcode {op}")
    if op == GET and value:
        raise ValueError("a GET carries no value")
    if len(key) > MAX_LENGTH or len(value) > MAX_LENGTH:
        raise ValueError(f"kvbin keys and values are at most {MAX_LENGTH} bytes")
    return REQUEST_HEADER.pack(op, len(key), len(value)) + key + value


def encode_reply(status: int, body: bytes, out: bytearray) -> None:
    """Append one reply to ``out``; raises ValueError for an unknown status or a body over 65,535 bytes."""
    if status not in STATUSES:
        raise ValueError(f"unknown kvbin status {status}")
    if len(body) > MAX_LENGTH:
        raise ValueError(f"a kvbin reply body is at most {MAX_LENGTH} bytes, not {len(body)}")
    out += REPLY_HEADER.pack(status, len(body))
    out += body


class RequestParser:
    """Splits a server's input into requests, whatever the reads' boundaries.

    ``feed`` returns the requests each read completes.  At a malformed request it stops:
    the requests before it are returned, ``error`` holds the KvbinProtocolError to answer
    with, and later feeds return nothing (the server closes the connection).
    """

    __slots__ = ("_tail", "error")

    def __init__(self) -> None:
        self._tail = b""  # the start of a request not yet complete (shorter than one request)
        self.error: KvbinProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held of a request not yet complete."""
        return len(self._tail)

    def feed(self, data: Buffer) -> list[Request]:
        """Return the requests ``data`` completes (none once ``error`` is set); raises nothing."""
        if self.error is not None:
            return []
        view: Buffer = self._tail + data if self._tail else data
        requests: list[Request] = []
        append = requests.append
        unpack = REQUEST_HEADER.unpack_from
        pos, end = 0, len(view)
        while pos < end:
            op = view[pos]
            if op not in OPCODES:
                self.error = KvbinProtocolError(f"unknown opcode {op}")
                break
            if end - pos < 5:
                break
            _, key_size, value_size = unpack(view, pos)
            start = pos + 5
            stop = start + key_size + value_size
            if op == GET and value_size:
                self.error = KvbinProtocolError(f"GET with a {value_size}-byte value")
                break
            if stop > end:
                break
            middle = start + key_size
            append(Request(op, bytes(view[start:middle]), bytes(view[middle:stop])))
            pos = stop
        self._tail = b"" if self.error is not None or pos == end else bytes(view[pos:])
        return requests


class ReplyParser:
    """Splits a client's input into replies, whatever the reads' boundaries."""

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = b""

    @property
    def buffered(self) -> int:
        """Bytes held of a reply not yet complete."""
        return len(self._tail)

    def feed(self, data: Buffer) -> list[Reply]:
        """Return the replies ``data`` completes; raises ProtocolError for an unknown status byte."""
        view: Buffer = self._tail + data if self._tail else data
        replies: list[Reply] = []
        pos = 0
        while (parsed := parse_reply(view, pos)) is not None:
            reply, pos = parsed
            replies.append(reply)
        self._tail = bytes(view[pos:]) if pos < len(view) else b""
        return replies


def parse_reply(data: Buffer, pos: int = 0) -> tuple[Reply, int] | None:
    """The reply at ``pos`` and its end, or None if incomplete; raises ProtocolError (unknown status)."""
    end = len(data)
    if pos >= end:
        return None
    status = data[pos]
    if status not in STATUSES:
        raise ProtocolError(f"unknown kvbin status {status}")
    if end - pos < 3:
        return None
    _, size = REPLY_HEADER.unpack_from(data, pos)
    stop = pos + 3 + size
    if stop > end:
        return None
    return Reply(status, bytes(data[pos + 3 : stop])), stop
