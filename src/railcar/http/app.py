"""railcar's own HTTP app interface: an app takes a ``Request`` and returns a ``Response`` or streams one.

An app is a plain function (any engine) or a coroutine function (engines with an
event loop: asyncio, uvloop).  The server calls it once the whole request, body
included, has arrived and passed every check, one request of a connection at a time
and in order, so pipelined requests are answered in the order they came.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Final
from urllib.parse import unquote_to_bytes

HeaderPairs = Iterable[tuple[str | bytes, str | bytes]]


def _as_bytes(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode("latin-1")


class Request:
    """One complete request: method, target, headers (as sent), body, and the connection's addresses."""

    __slots__ = ("body", "client", "headers", "keep_alive", "method", "server", "target", "version")

    def __init__(
        self,
        method: str,
        target: bytes,
        version: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        keep_alive: bool,
        client: object = None,
        server: object = None,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.client = client
        self.server = server

    @property
    def raw_path(self) -> bytes:
        """The target up to ``?``, still percent-encoded."""
        return self.target.partition(b"?")[0]

    @property
    def path(self) -> str:
        """The target's path, percent-decoded (as UTF-8, undecodable bytes escaped)."""
        return unquote_to_bytes(self.raw_path).decode("utf-8", "surrogateescape")

    @property
    def query(self) -> bytes:
        """The target after ``?`` (empty without one)."""
        return self.target.partition(b"?")[2]

    def header(self, name: str) -> bytes | None:
        """The value of the first header called ``name`` (any case), or None."""
        wanted = name.lower().encode("latin-1")
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None


class Response:
    """A whole response: status, headers and a body whose length the server sends as Content-Length."""

    __slots__ = ("body", "headers", "status")

    def __init__(
        self,
        body: bytes | str = b"",
        status: int = 200,
        headers: HeaderPairs = (),
        content_type: str | None = None,
    ) -> None:
        self.status = status
        self.body = body.encode() if isinstance(body, str) else body
        pairs = [(_as_bytes(name), _as_bytes(value)) for name, value in headers]
        if content_type is not None:
            pairs.append((b"Content-Type", content_type.encode("latin-1")))
        self.headers = pairs


class StreamingResponse:
    """A response whose body is produced piece by piece, sent chunked (HTTP/1.1) or until close (1.0).

    The server takes the next piece only while the connection's output is under its
    high-water mark, so a slow reader holds back the producer, not the server's memory.
    """

    __slots__ = ("chunks", "headers", "status")

    def __init__(
        self,
        chunks: Iterable[bytes],
        status: int = 200,
        headers: HeaderPairs = (),
        content_type: str | None = None,
    ) -> None:
        self.status = status
        self.chunks = chunks
        pairs = [(_as_bytes(name), _as_bytes(value)) for name, value in headers]
        if content_type is not None:
            pairs.append((b"Content-Type", content_type.encode("latin-1")))
        self.headers = pairs


AnyResponse = Response | StreamingResponse
App = Callable[[Request], AnyResponse | Awaitable[AnyResponse]]

NOT_FOUND: Final = Response(b"Not Found\n", 404, content_type="text/plain")
