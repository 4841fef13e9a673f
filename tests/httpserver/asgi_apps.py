"""ASGI apps the tests serve, in process and through ``railcar serve asgi``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from railcar.http.lifespan import Message, Receive, Scope, Send


class Events:
    """What the lifespan app saw, and how far its streams got."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.pieces_sent = 0
        self.stream_ended: str | None = None
        self.heard: str | None = None  # the message an app waiting on receive got


events = Events()


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    events.log.append("startup")
    yield {"greeting": "hello from startup"}
    events.log.append("shutdown")


async def greet(request: StarletteRequest) -> PlainTextResponse:
    return PlainTextResponse(request.state.greeting)


async def count(request: StarletteRequest) -> StreamingResponse:
    async def numbers() -> AsyncIterator[bytes]:
        for number in range(int(request.query_params["to"])):
            yield b"%d\n" % number

    return StreamingResponse(numbers(), media_type="text/plain")


async def flood_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Streams up to 10 GB, one megabyte per send, and records how the stream ended."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    try:
        for _ in range(10_000):
            await send({"type": "http.response.body", "body": bytes(1 << 20), "more_body": True})
            events.pieces_sent += 1
        events.stream_ended = "completed"
    except OSError as exc:  # ASGI 2.4: send raises an OSError once the client has gone
        events.stream_ended = type(exc).__name__
        raise


lifespan_app = Starlette(routes=[Route("/greet", greet), Route("/count", count)], lifespan=lifespan)


async def no_lifespan_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A bare ASGI app that knows only http, as many do."""
    if scope["type"] != "http":
        raise RuntimeError(f"unsupported scope {scope['type']}")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"plain"})


async def failing_startup_app(scope: Scope, receive: Receive, send: Send) -> None:
    message: Message = await receive()
    assert message["type"] == "lifespan.startup"
    await send({"type": "lifespan.startup.failed", "message": "no database"})


async def streaming_then_raising_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    await asyncio.sleep(0)
    raise RuntimeError("broke mid-stream")
