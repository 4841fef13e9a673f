"""Run an ASGI 3 application (Starlette, FastAPI, …) as a railcar HTTP app, on the asyncio engines.

Each request becomes one ``http`` scope; ``receive`` gives the whole body at once (the
server has read and checked it before calling the app) and afterwards waits for the
response to end, then reports ``http.disconnect``; the messages ``send`` gets are
gathered into one ``Response``.  Lifespan events are not sent: apps that need them
must be started otherwise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote_to_bytes

from railcar.http.app import Request, Response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ASGIError(RuntimeError):
    """The ASGI app broke the protocol (a message out of order, no response)."""


def _address(address: object) -> list[Any] | None:
    if isinstance(address, tuple) and len(address) >= 2:
        return [address[0], address[1]]
    return None


class ASGIAdapter:
    """A railcar app (coroutine function) that serves one ASGI application."""

    def __init__(self, app: ASGIApp, root_path: str = "") -> None:
        self.app = app
        self.root_path = root_path

    def scope(self, request: Request) -> Scope:
        """The ASGI ``http`` scope of ``request``."""
        raw_path = request.raw_path
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": request.version,
            "method": request.method,
            "scheme": "http",
            "path": unquote_to_bytes(raw_path).decode("utf-8", "surrogateescape"),
            "raw_path": raw_path,
            "query_string": request.query,
            "root_path": self.root_path,
            "headers": [(name.lower(), value) for name, value in request.headers],
            "client": _address(request.client),
            "server": _address(request.server),
            "state": {},
        }

    async def __call__(self, request: Request) -> Response:
        """Run the app on ``request`` and return what it sent; raises ASGIError if it sent no response."""
        finished = asyncio.Event()
        delivered = False
        status: int | None = None
        headers: list[tuple[bytes, bytes]] = []
        body: list[bytes] = []

        async def receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": request.body, "more_body": False}
            await finished.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal status
            kind = message["type"]
            if kind == "http.response.start" and status is None:
                status = int(message["status"])
                headers.extend((bytes(n), bytes(v)) for n, v in message.get("headers", ()))
            elif kind == "http.response.body" and status is not None and not finished.is_set():
                body.append(bytes(message.get("body", b"")))
                if not message.get("more_body", False):
                    finished.set()
            else:
                raise ASGIError(f"unexpected ASGI message {kind!r}")

        try:
            await self.app(self.scope(request), receive, send)
        finally:
            finished.set()  # a receive() still waiting reports the disconnect
        if status is None:
            raise ASGIError("the ASGI app returned without starting a response")
        # The server frames the body itself: drop the app's own framing headers.
        kept = [(n, v) for n, v in headers if n.lower() not in (b"content-length", b"transfer-encoding")]
        return Response(b"".join(body), status, kept)
