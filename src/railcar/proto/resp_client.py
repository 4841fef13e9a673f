"""The client side of RESP2, sans I/O: the requests a GET/SET client sends and the replies it frames.

What a server sends back to GET and SET is a simple string (``+OK``), an error
(``-ERR …``), an integer, or a bulk string (``$-1`` for nil); ``frame_reply`` finds
where one ends, so a reply that differs from the one expected can still be told
apart (another value) from a broken stream.
"""

from __future__ import annotations

from typing import Final

from railcar.errors import ProtocolError

Buffer = bytes | bytearray

STORED: Final = b"+OK\r\n"
NIL: Final = b"$-1\r\n"
#: Longest length or simple line a reply framer waits for before calling the stream broken.
MAX_LINE: Final = 64 * 1024


def encode_set(key: bytes, value: bytes) -> bytes:
    """SET key value, as a RESP array of bulk strings."""
    return b"*3\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(key), key, len(value), value)


def encode_get(key: bytes) -> bytes:
    """GET key, as a RESP array of bulk strings."""
    return b"*2\r\n$3\r\nGET\r\n$%d\r\n%b\r\n" % (len(key), key)


def bulk(value: bytes | None) -> bytes:
    """The reply to a GET that finds ``value`` (nil for None)."""
    return NIL if value is None else b"$%d\r\n%b\r\n" % (len(value), value)


def frame_reply(data: Buffer, pos: int = 0) -> tuple[int, int] | None:
    """The type byte of the reply at ``pos`` and where it ends, or None if incomplete.

    Raises ProtocolError for an aggregate or unknown type, a bad bulk length, or a line
    longer than MAX_LINE without its CRLF.
    """
    if pos >= len(data):
        return None
    kind = data[pos]
    line_end = data.find(b"\r\n", pos, pos + MAX_LINE)
    if line_end < 0:
        if len(data) - pos >= MAX_LINE:
            raise ProtocolError("RESP reply line without CRLF")
        return None
    if kind in b"+-:":
        return kind, line_end + 2
    if kind != ord("$"):
        raise ProtocolError(f"unexpected RESP reply type {bytes([kind])!r}")
    try:
        size = int(data[pos + 1 : line_end])
    except ValueError:
        raise ProtocolError("bad RESP bulk length") from None
    if size == -1:
        return kind, line_end + 2
    if size < 0:
        raise ProtocolError("bad RESP bulk length")
    stop = line_end + 2 + size + 2
    if stop > len(data):
        return None
    if data[stop - 2 : stop] != b"\r\n":
        raise ProtocolError("RESP bulk string without CRLF")
    return kind, stop
