"""HTTP/1.1 response heads as bytes: cached status lines, header names and values checked (no splitting)."""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Final

_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A field value: visible characters, obs-text, and spaces or tabs between them (no CR, LF, NUL).
_VALUE: Final = re.compile(rb"[^\x00-\x08\x0a-\x1f\x7f]*")
_SERVER: Final = b"Server: railcar\r\n"
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


def encode_head(
    status: int,
    headers: list[tuple[bytes, bytes]],
    date: bytes,
    content_length: int | None,
    *,
    chunked: bool = False,
    close: bool = False,
) -> bytes:
    """A response head with Server, ``date`` (a whole Date line), framing and close headers added.

    Raises ValueError for a header name that is not a token or a value holding CR, LF or
    another control byte (response splitting).
    """
    parts = [status_line(status), _SERVER, date]
    for name, value in headers:
        if _TOKEN.fullmatch(name) is None or _VALUE.fullmatch(value) is None:
            raise ValueError(f"invalid response header {name!r}: {value!r}")
        parts.append(b"%s: %s\r\n" % (name, value))
    if content_length is not None:
        parts.append(b"Content-Length: %d\r\n" % content_length)
    elif chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    if close:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)
