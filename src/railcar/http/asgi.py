"""Run an ASGI 3 application (Starlette, FastAPI, …) on railcar's HTTP server, on the asyncio engines.

Each request becomes one ``http`` scope.  ``receive`` gives the whole body at once (the
server has read and checked it before calling the app), then waits until the response
has ended or the client has gone and says ``http.disconnect``.  A response whose first
body message is its last becomes one ``Response`` (Content-Length); one sent in several
messages is streamed (chunked), each ``send`` returning once the server has taken the
piece, so a slow client holds the app back instead of filling memory; after the client
has gone, ``send`` raises ``ClientDisconnected`` (an OSError, as ASGI 2.4 asks).
``create_asgi_server`` also runs the app's lifespan (``http.lifespan``) around the
server's run, on the loop its requests run on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from railcar.engine import create_server, server_class
from railcar.engine.api import Handler, Server
from railcar.http.app import AnyResponse, Request, Response, StreamingResponse
from railcar.http.lifespan import ASGIApp, Lifespan, LifespanMode, Message, Scope
from railcar.http.server import HttpHandler
from railcar.http.timeouts import Timeouts
from railcar.proto.http1 import DEFAULT_LIMITS, Limits

log = logging.getLogger("railcar.http")

#: Framing is the server's: these headers from the app are dropped.
_FRAMING = (b"content-length", b"transfer-encoding")


class ASGIError(RuntimeError):
    """The ASGI app broke the protocol (a message out of order, no response)."""


class ClientDisconnected(OSError):
    """The client went away before the response ended; ``send`` raises it."""


def _address(address: object) -> list[Any] | None:
    if isinstance(address, tuple) and len(address) >= 2:
        return [address[0], address[1]]
    return None


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class _BodyPieces:
    """The pieces of a streamed body, handed from the app's ``send`` to the server one at a time."""

    def __init__(self, on_close: asyncio.Event) -> None:
        self._pieces: deque[bytes] = deque()
        self._ended = False
        self._error: BaseException | None = None
        self._on_close = on_close
        self._reader: asyncio.Future[None] | None = None
        self._writer: asyncio.Future[None] | None = None
        self.closed = False

    def __aiter__(self) -> _BodyPieces:
        return self

    async def __anext__(self) -> bytes:
        while not self._pieces:
            if self._error is not None:
                raise self._error
            if self._ended or self.closed:
                raise StopAsyncIteration
            self._reader = asyncio.get_running_loop().create_future()
            await self._reader
        piece = self._pieces.popleft()
        _wake(self._writer)
        return piece

    async def put(self, piece: bytes, more: bool) -> None:
        """Hand ``piece`` to the server and wait until it takes it; raises ClientDisconnected."""
        if self.closed:
            raise ClientDisconnected("the client disconnected")
        self._pieces.append(piece)
        self._ended = not more
        _wake(self._reader)
        while self._pieces and not self.closed:
            self._writer = asyncio.get_running_loop().create_future()
            await self._writer
        if self._pieces:
            raise ClientDisconnected("the client disconnected")

    def fail(self, error: BaseException) -> None:
        """End the body with ``error`` (the server aborts the connection)."""
        self._error = error
        _wake(self._reader)

    @property
    def ended(self) -> bool:
        """True once the app sent the last piece."""
        return self._ended

    async def aclose(self) -> None:
        """The server takes no more pieces: wake a waiting ``send`` (it raises ClientDisconnected)."""
        self.closed = True
        self._on_close.set()
        _wake(self._writer)
        _wake(self._reader)


class _Exchange:
    """One request's ``receive`` and ``send``, and the response they produce."""

    def __init__(self, request: Request, loop: asyncio.AbstractEventLoop) -> None:
        self.request = request
        self.response: asyncio.Future[AnyResponse] = loop.create_future()
        self.finished = asyncio.Event()
        self.body: _BodyPieces | None = None
        self.gone = False  # the client left before the response began
        self._delivered = False
        self._status: int | None = None
        self._headers: list[tuple[bytes, bytes]] = []

    async def receive(self) -> Message:
        if not self._delivered:
            self._delivered = True
            return {"type": "http.request", "body": self.request.body, "more_body": False}
        await self.finished.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if self.gone or (self.body is not None and self.body.closed):
            raise ClientDisconnected("the client disconnected")
        if kind == "http.response.start" and self._status is None:
            self._status = int(message["status"])
            self._headers = [
                (bytes(name), bytes(value))
                for name, value in message.get("headers", ())
                if bytes(name).lower() not in _FRAMING
            ]
        elif kind == "http.response.body" and self._status is not None and not self.finished.is_set():
            piece = bytes(message.get("body", b""))
            more = bool(message.get("more_body", False))
            if self.body is None:
                if not more:
                    self._resolve(lambda: Response(piece, self._status or 500, self._headers))
                    self.finished.set()
                    return
                body = self.body = _BodyPieces(self.finished)
                self._resolve(lambda: StreamingResponse(body, self._status or 500, self._headers))
            await self.body.put(piece, more)
            if not more:
                self.finished.set()
        else:
            raise ASGIError(f"unexpected ASGI message {kind!r}")

    def client_left(self) -> None:
        """The client left before the response began: ``receive`` says http.disconnect, ``send`` raises."""
        self.gone = True
        self.finished.set()

    def _resolve(self, build: Callable[[], AnyResponse]) -> None:
        try:
            self.response.set_result(build())
        except ValueError as error:  # a bad status or header: the app's error, answered 500
            self.response.set_exception(error)
            raise

    def app_ended(self, error: BaseException | None) -> None:
        """The app returned (or raised ``error``): fail whatever it left unfinished."""
        self.finished.set()
        if not self.response.done():
            self.response.set_exception(error or ASGIError("the ASGI app returned without a response"))
        elif self.body is not None and not self.body.ended:
            if self.body.closed:
                return  # the client left: the app's error is only the news of it
            if error is not None:
                log.error("ASGI app failed while streaming %r: %r", self.request.target, error)
            self.body.fail(error or ASGIError("the ASGI app returned before ending its response"))


class ASGIAdapter:
    """A railcar app (coroutine function) that serves one ASGI application."""

    def __init__(self, app: ASGIApp, root_path: str = "") -> None:
        self.app = app
        self.root_path = root_path
        #: The app's lifespan state (its scopes get a copy each) and its startup, once begun.
        self.state: dict[str, Any] = {}
        self.startup: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._exchanges: dict[Request, _Exchange] = {}  # by identity: the requests being answered

    def scope(self, request: Request) -> Scope:
        """The ASGI ``http`` scope of ``request``."""
        raw_path = request.raw_path
        headers = [(name.lower(), value) for name, value in request.headers]
        authority = request.authority
        if authority is not None:  # an absolute-form target's host replaces Host (RFC 9112 3.2.2)
            headers = [(name, authority if name == b"host" else value) for name, value in headers]
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": request.version,
            "method": request.method,
            "scheme": "http",
            "path": unquote_to_bytes(raw_path).decode("utf-8", "surrogateescape"),
            "raw_path": raw_path,
            "query_string": request.query,
            "root_path": self.root_path,
            "headers": headers,
            "client": _address(request.client),
            "server": _address(request.server),
            "state": dict(self.state),
        }

    async def __call__(self, request: Request) -> AnyResponse:
        """Run the app on ``request``; raises what the app raised before responding, or ASGIError."""
        if self.startup is not None:
            await asyncio.shield(self.startup)  # requests that came early wait for the startup
        loop = asyncio.get_running_loop()
        exchange = self._exchanges[request] = _Exchange(request, loop)
        task = loop.create_task(self._run(exchange))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            return await exchange.response
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            del self._exchanges[request]

    def client_left(self, request: Request) -> bool:
        """Tell the app answering ``request`` that its client left (http.disconnect); False if none is."""
        exchange = self._exchanges.get(request)
        if exchange is None:
            return False
        exchange.client_left()
        return True

    async def _run(self, exchange: _Exchange) -> None:
        try:
            await self.app(self.scope(exchange.request), exchange.receive, exchange.send)
        except Exception as error:  # noqa: BLE001 - the app's failure is the request's, answered 500
            exchange.app_ended(error)
        else:
            exchange.app_ended(None)


class _AsgiHandler(HttpHandler):
    """The HTTP handler of an ASGI app, running its lifespan around each server run."""

    def __init__(
        self,
        adapter: ASGIAdapter,
        lifespan: LifespanMode,
        limits: Limits,
        timeouts: Timeouts | None,
        parser: str = "auto",
    ) -> None:
        super().__init__(adapter, limits, timeouts, parser=parser)
        self.adapter = adapter
        self.lifespan_mode = lifespan
        self.lifespan: Lifespan | None = None
        #: The coming or current run's startup, for threads that wait on it (``wait_for_startup``);
        #: made before the run begins, since on_start comes after ``Server.start`` returns.
        self.started: concurrent.futures.Future[None] = concurrent.futures.Future()

    def on_start(self, server: Server) -> None:
        """Begin the app's lifespan startup on the server's loop; requests wait for it."""
        super().on_start(server)
        loop = server.loop
        assert loop is not None  # create_asgi_server chose an engine with a loop
        lifespan = self.lifespan = Lifespan(self.adapter.app, self.lifespan_mode)
        self.adapter.state = lifespan.state
        started = self.started
        startup = self.adapter.startup = loop.create_task(lifespan.startup())

        def report(task: asyncio.Task[None]) -> None:
            if task.cancelled():
                started.set_exception(ASGIError("the lifespan startup was cancelled"))
            elif (error := task.exception()) is not None:
                started.set_exception(error)
            else:
                started.set_result(None)

        startup.add_done_callback(report)

    def client_left(self, request: Request, task: asyncio.Task[AnyResponse]) -> None:
        """The app hears http.disconnect (ASGI 2.4) and may end as it likes; anything else is cancelled."""
        if not self.adapter.client_left(request):
            task.cancel()

    def on_stop(self, server: Server) -> Any:
        """Run the app's lifespan shutdown, on the loop, once every connection has closed."""
        self.started = concurrent.futures.Future()  # the next run's
        lifespan = self.lifespan
        startup = self.adapter.startup
        if lifespan is None or startup is None or not startup.done() or startup.cancelled():
            return None
        if startup.exception() is not None:
            return None  # it never started: nothing to shut down
        return lifespan.shutdown()


def create_asgi_server(
    app: ASGIApp,
    engine: str | None = None,
    *,
    lifespan: LifespanMode = "auto",
    root_path: str = "",
    limits: Limits = DEFAULT_LIMITS,
    timeouts: Timeouts | None = None,
    **options: Any,
) -> Server:
    """An unstarted HTTP server for the ASGI ``app``; raises ValueError (engine without a loop, bad options).

    After ``start``, ``wait_for_startup`` waits for the app's lifespan startup; its
    shutdown runs within ``stop``, after the last connection has closed.
    """
    if not server_class(engine).has_loop:
        raise ValueError(f"an ASGI app needs an engine with an event loop (asyncio, uvloop), not {engine!r}")
    handler = asgi_handler(app, lifespan=lifespan, root_path=root_path, limits=limits, timeouts=timeouts)
    return create_server(handler, engine, **options)


def asgi_handler(
    app: ASGIApp,
    *,
    lifespan: LifespanMode = "auto",
    root_path: str = "",
    limits: Limits = DEFAULT_LIMITS,
    timeouts: Timeouts | None = None,
    parser: str = "auto",
) -> Handler:
    """The handler ``create_asgi_server`` serves ``app`` with, for ``railcar.serve`` (one per worker).

    Raises ValueError for a ``parser`` not in ``proto.http1.PARSERS`` (or ``auto``) or not built here.
    """
    return _AsgiHandler(ASGIAdapter(app, root_path), lifespan, limits, timeouts, parser)


def wait_for_startup(server: Server, timeout: float = 60.0) -> None:
    """Wait for the lifespan startup of a ``create_asgi_server``; raises LifespanFailed or TimeoutError."""
    handler = server.handler
    if not isinstance(handler, _AsgiHandler):
        raise TypeError("not a server made by create_asgi_server")
    handler.started.result(timeout)
