"""railcar's own HTTP app interface: an app takes a ``Request`` and returns a ``Response`` or streams one.

An app is a plain function (any engine) or a coroutine function (engines with an
event loop: asyncio, uvloop).  The server calls it once the whole request, body
included, has arrived and passed every check, one request of a connection at a time
and in order, so pipelined requests are answered in the order they came.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from typing import Final

from railcar.proto.http1 import Request
from railcar.proto.http1_response import header_lines, response_prefix, status_line

# The app's request is the parser's event, filled in by the server.
__all__ = ["NOT_FOUND", "AnyResponse", "App", "HeaderPairs", "Request", "Response", "StreamingResponse"]

HeaderPairs = Iterable[tuple[str | bytes, str | bytes]]
_NO_BODY_STATUS: Final = frozenset({204, 304})
_LINES: dict[tuple[tuple[bytes, bytes], ...], bytes] = {}
_LINES_KEPT: Final = 512


def _as_bytes(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode("latin-1")


def _header_pairs(headers: HeaderPairs, content_type: str | None) -> tuple[tuple[bytes, bytes], ...]:
    pairs = [(_as_bytes(name), _as_bytes(value)) for name, value in headers]
    if content_type is not None:
        pairs.append((b"Content-Type", content_type.encode("latin-1")))
    return tuple(pairs)


def _encoded(pairs: tuple[tuple[bytes, bytes], ...]) -> bytes:
    """``header_lines(pairs)``, remembered: apps build responses with the same few header sets."""
    lines = _LINES.get(pairs)
    if lines is None:
        lines = header_lines(pairs)
        if len(_LINES) >= _LINES_KEPT:
            _LINES.clear()
        _LINES[pairs] = lines
    return lines


class Response:
    """A whole response: status, headers and a body whose length the server sends as Content-Length.

    Immutable, and its head is encoded once, here: an app may return the same Response
    to many requests.  Raises ValueError for a status outside 100..599 or a header that
    would split the response (a name that is not a token, a value holding CR or LF).
    """

    __slots__ = ("_body", "_headers", "_prefix", "_status")

    def __init__(
        self,
        body: bytes | str = b"",
        status: int = 200,
        headers: HeaderPairs = (),
        content_type: str | None = None,
    ) -> None:
        self._status = status
        self._body = body.encode() if isinstance(body, str) else bytes(body)
        self._headers = _header_pairs(headers, content_type)
        bodiless = status < 200 or status in _NO_BODY_STATUS
        length = None if bodiless else len(self._body)
        self._prefix = response_prefix(status, _encoded(self._headers), length)
        if bodiless:
            self._body = b""  # 1xx, 204 and 304 have none (RFC 9110 6.4.1)

    @property
    def status(self) -> int:
        """The status code."""
        return self._status

    @property
    def body(self) -> bytes:
        """The body (empty for 1xx, 204 and 304, which have none)."""
        return self._body

    @property
    def headers(self) -> tuple[tuple[bytes, bytes], ...]:
        """The app's headers (Server, Date and framing are the server's)."""
        return self._headers

    @property
    def prefix(self) -> bytes:
        """The encoded head up to the Date line (see ``proto.http1_response``)."""
        return self._prefix


class StreamingResponse:
    """A response whose body is produced piece by piece, sent chunked (HTTP/1.1) or until close (1.0).

    ``chunks`` is an iterable, or an async iterable (engines with an event loop); the
    server takes the next piece only while the connection's output is under its
    high-water mark, so a slow reader holds back the producer, not the server's memory.
    When the server stops taking pieces (the body ended, the client left, a HEAD request)
    it calls the async iterator's ``aclose`` if it has one.  Raises ValueError like
    ``Response`` for a bad status or header.
    """

    __slots__ = ("chunks", "headers", "lines", "status")

    def __init__(
        self,
        chunks: Iterable[bytes] | AsyncIterable[bytes],
        status: int = 200,
        headers: HeaderPairs = (),
        content_type: str | None = None,
    ) -> None:
        status_line(status)  # refuse a bad status here, in the app, not when the server sends it
        self.status = status
        self.chunks = chunks
        self.headers = _header_pairs(headers, content_type)
        self.lines = _encoded(self.headers)


AnyResponse = Response | StreamingResponse
App = Callable[[Request], AnyResponse | Awaitable[AnyResponse]]

NOT_FOUND: Final = Response(b"Not Found\n", 404, content_type="text/plain")
