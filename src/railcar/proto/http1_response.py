"""HTTP/1.1 response heads as bytes: status lines cached, header names and values checked (no splitting).

A head is built in two parts so that a response can be encoded once and sent many
times: the ``prefix`` (status line, Server, the app's headers, framing), fixed for a
response, then per send the Date line and the end (``END``, ``CLOSE`` or ``KEEP_ALIVE``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from http import HTTPStatus
from typing import Final

_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A field value: visible characters, obs-text, and spaces or tabs between them (no CR, LF, NUL).
_VALUE: Final = re.compile(rb"[^\x00-\x08\x0a-\x1f\x7f]*")
_SERVER: Final = b"Server: railcar\r\n"
CHUNKED: Final = b"Transfer-Encoding: chunked\r\n"
#: Ends of a head: keep the connection open (HTTP/1.1), close it, or keep an HTTP/1.0 one open.
END: Final = b"\r\n"
CLOSE: Final = b"Connection: close\r\n\r\n"
KEEP_ALIVE: Final = b"Connection: keep-alive\r\n\r\n"
_status_lines: dict[int, bytes] = {}


def status_line(status: int) -> bytes:
    """The status line (with its CRLF) for a status in 100..599; raises ValueError outside it."""
    line = _status_lines.get(status)
    if line is None:
        if not 100 <= status <= 599:
            raise ValueError(f"invalid HTTP status {status}")
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        line = _status_lines[status] = f"HTTP/1.1 {status} {reason}\r\n".encode("ascii")
    return line


def header_lines(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The header lines of ``headers``; raises ValueError for a bad name or value (response splitting).

    A name must be a token; a value may not hold CR, LF or another control byte.
    """
    lines = []
    for name, value in headers:
        if _TOKEN.fullmatch(name) is None or _VALUE.fullmatch(value) is None:
            raise ValueError(f"invalid response header {name!r}: {value!r}")
        lines.append(b"%s: %s\r\n" % (name, value))
    return b"".join(lines)


def response_prefix(status: int, lines: bytes, content_length: int | None, *, chunked: bool = False) -> bytes:
    """Status line, Server, ``lines`` and framing: what precedes Date; raises ValueError for a bad status."""
    framing = b"Content-Length: %d\r\n" % content_length if content_length is not None else b""
    return b"".join((status_line(status), _SERVER, lines, framing, CHUNKED if chunked else b""))
