"""The engine handler serving an HTTP app: bytes through ``proto.http1``, requests to the app, responses back.

One ``_Session`` per connection.  Each read is parsed whole; the requests it completes
are answered in order, and the responses of a sync app to one read are written with
one ``write`` (pipelining).  A request waits for the one before it: an async app's
response, or a streaming one, holds the requests behind it (at most
``max_pipeline``; past that the connection stops reading until they are answered).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Iterator
from typing import Any, Final

from railcar.engine import create_server
from railcar.engine.api import Buffer, Conn, Handler, Server
from railcar.engine.sweeper import Sweeper
from railcar.errors import ConnectionClosed
from railcar.http.app import AnyResponse, App, Response, StreamingResponse
from railcar.http.date import DateLine
from railcar.http.timeouts import Timeouts
from railcar.proto.http1 import (
    CONTINUE,
    DEFAULT_LIMITS,
    Body,
    Limits,
    Rejected,
    Request,
    RequestInput,
    input_factory,
    reject_response,
)
from railcar.proto.http1 import END as REQUEST_END
from railcar.proto.http1_response import CLOSE, END, KEEP_ALIVE, response_prefix

log = logging.getLogger("railcar.http")

_WAIT_FIRST, _HEAD, _BODY, _BUSY, _IDLE = range(5)
_SERVER_ERROR: Final = Response(b"Internal Server Error\n", 500, content_type="text/plain")
_TIMEOUT_408: Final = reject_response(408, "request not received in time")


class _Session:
    """What one connection holds between reads."""

    __slots__ = (
        "app_request",
        "app_task",
        "body",
        "busy",
        "conn",
        "deadline",
        "drained",
        "head",
        "lock",
        "out",
        "paused",
        "pending",
        "phase",
        "proto",
        "rejected",
        "stream",
        "stream_chunked",
        "stream_closes",
        "stream_task",
    )

    def __init__(self, conn: Conn, proto: RequestInput, deadline: float) -> None:
        self.conn = conn
        self.proto = proto
        self.head: Request | None = None
        self.body: list[bytes] = []
        self.pending: deque[Request] = deque()
        self.rejected: Rejected | None = None
        self.out: list[bytes] = []
        self.busy = False  # an async or streaming response is in progress
        self.paused = False  # reading paused by the handler (max_pipeline requests waiting)
        self.stream: Iterator[bytes] | None = None
        self.stream_chunked = False
        self.stream_closes = False  # the streamed request is the connection's last
        # An async body is sent by a task on the server's loop, which waits on ``drained``
        # while the connection is over its high-water mark.
        self.stream_task: asyncio.Task[None] | None = None
        self.drained: asyncio.Future[None] | None = None
        # The request an async app is answering, and the task awaiting its response.
        self.app_request: Request | None = None
        self.app_task: asyncio.Task[AnyResponse] | None = None
        self.phase = _WAIT_FIRST
        self.deadline: float | None = deadline
        # The threads engine runs each connection on its own thread and the sweeper on
        # another; the lock keeps a timeout from interleaving with a response.
        self.lock = threading.Lock()


class HttpHandler(Handler):
    """Serves ``app`` on any engine; async apps need an engine with an event loop (asyncio, uvloop).

    ``parser`` is one of ``proto.http1.PARSERS`` or ``auto`` (railcar's C binding of llhttp where
    built, else httptools); ValueError for another or one not built here.
    """

    takes_bytes = True  # the parser reads any buffer

    def __init__(
        self,
        app: App,
        limits: Limits = DEFAULT_LIMITS,
        timeouts: Timeouts | None = None,
        max_pipeline: int = 64,
        parser: str = "auto",
    ) -> None:
        if max_pipeline < 1:
            raise ValueError("max_pipeline must be at least 1")
        self._new_input = input_factory(parser)
        self.app = app
        self.limits = limits
        self.timeouts = timeouts or Timeouts()
        self.max_pipeline = max_pipeline
        self._date = DateLine()
        self._sessions: set[_Session] = set()
        self._sweeper = Sweeper(self.timeouts.tick, self._sweep)
        self._server: Server | None = None
        # The last whole response encoded for the fast path, with the Date line it holds.
        self._wire: tuple[object, bytes, bytes] = (None, b"", b"")

    # -- engine callbacks -------------------------------------------------------------------

    def on_start(self, server: Server) -> None:
        """Remember the server (its loop runs async apps) and start the timeout sweeper."""
        self._server = server
        self._sweeper.start(server)

    def on_open(self, conn: Conn) -> None:
        """Give the connection a session; it must send a request head within the header timeout."""
        proto = self._new_input(self.limits, conn.peer, conn.local)
        session = _Session(conn, proto, time.monotonic() + self.timeouts.header)
        conn.context["http"] = session
        self._sessions.add(session)

    def on_close(self, conn: Conn, exc: BaseException | None) -> None:
        """Forget the connection's session."""
        session = conn.context.get("http")
        if session is not None:
            self._sessions.discard(session)
            session.stream = None
            if session.stream_task is not None:
                session.stream_task.cancel()  # the body's producer learns the client left
            app_task = session.app_task
            if app_task is not None and not app_task.done():
                assert session.app_request is not None  # set with app_task
                self.client_left(session.app_request, app_task)

    def client_left(self, request: Request, task: asyncio.Task[AnyResponse]) -> None:
        """The client of ``request`` left before its async app answered: cancel the app's ``task``."""
        task.cancel()

    def on_writable(self, conn: Conn) -> None:
        """Go on with a streaming response that waited for the output to drain."""
        session: _Session = conn.context["http"]
        drained = session.drained
        if drained is not None and not drained.done():
            drained.set_result(None)
        with session.lock:
            if session.stream is not None:
                self._pump(session)
                self._advance(session)

    def on_data(self, conn: Conn, data: Buffer) -> None:
        """Parse ``data`` and answer every request it completed that is next in line."""
        session: _Session = conn.context["http"]
        with session.lock:
            head = session.head
            body = session.body
            pending = session.pending
            app = self.app
            date = self._date.get()
            closed = conn.closed  # changes only in _answer (a closing or failed response)
            wire = self._wire
            for event in session.proto.receive(data):
                if event is REQUEST_END:
                    assert head is not None  # the end of a request always follows its head
                    if body:
                        head.body = body[0] if len(body) == 1 else b"".join(body)
                        body = session.body = []
                    if pending or session.busy or closed:
                        pending.append(head)
                    else:
                        # Next in line: answered now.  The common response (whole, HTTP/1.1
                        # keep-alive, not to HEAD) is one bytes object per Response and second.
                        try:
                            response = app(head)
                        except Exception:
                            log.exception("HTTP app failed on %s %r", head.method, head.target)
                            response = _SERVER_ERROR
                        if (
                            type(response) is Response
                            and head.keep_alive
                            and head.version == "1.1"
                            and head.method != "HEAD"
                        ):
                            if wire[0] is not response or wire[1] is not date:
                                # One tuple, replaced whole: threads engine connections share it.
                                wire = self._wire = (
                                    response,
                                    date,
                                    response.prefix + date + END + response.body,
                                )
                            session.out.append(wire[2])
                        else:
                            self._answer(session, head, response)
                            closed = conn.closed
                    head = None
                elif type(event) is Request:
                    head = event
                elif type(event) is Body:
                    body.append(event.data)
                elif isinstance(event, Rejected):
                    log.info("rejected a request from %s: %d %s", conn.peer, event.status, event.reason)
                    session.rejected = event
            session.head = head
            if pending or session.busy or closed or head is not None or session.rejected or session.paused:
                self._advance(session)
                return
            # Every request answered, nothing waiting: what is left of _advance is the write and
            # the deadline (unchanged for a read that answered nothing on an idle connection).
            out = session.out
            if out:
                session.out = []
                try:  # noqa: SIM105 - contextlib.suppress costs three Python calls per read
                    conn.write(out[0] if len(out) == 1 else b"".join(out))
                except ConnectionClosed:
                    pass  # the peer is gone: nothing to answer
                self._set_deadline(session, True)
            elif session.phase != _IDLE or session.proto.in_request:
                self._set_deadline(session, False)

    # -- answering ----------------------------------------------------------------------------

    def _advance(self, session: _Session) -> None:
        """Answer what is next in line, write what was encoded, and reset the connection's deadline."""
        conn = session.conn
        pending = session.pending
        while pending and not session.busy and not conn.closed:
            request = pending.popleft()
            self._answer(session, request, self._call(request))
        if session.rejected is not None and not pending and not session.busy and not conn.closed:
            rejected = session.rejected
            session.out.append(reject_response(rejected.status, rejected.reason, self._date.get()))
            self._flush(session)
            conn.close()
            return
        head = session.head
        if head is not None and head.expects_continue and not pending and not session.busy:
            # The client may be holding the body back until told to go on; only a request next
            # in line is told, so an interim response never lands before an earlier final one.
            head.expects_continue = False
            session.out.append(CONTINUE)
        wrote = self._flush(session)
        if len(pending) >= self.max_pipeline:
            session.paused = True
            conn.pause_reading()
        elif session.paused and not session.busy:
            session.paused = False
            conn.resume_reading()
        self._set_deadline(session, wrote)

    def _call(self, request: Request) -> AnyResponse | Awaitable[AnyResponse]:
        try:
            return self.app(request)
        except Exception:
            log.exception("HTTP app failed on %s %r", request.method, request.target)
            return _SERVER_ERROR

    def _answer(
        self, session: _Session, request: Request, result: AnyResponse | Awaitable[AnyResponse]
    ) -> None:
        if type(result) is not Response and inspect.isawaitable(result):
            self._await(session, request, result)
        else:
            self._respond(session, request, result)

    def _await(self, session: _Session, request: Request, result: Awaitable[AnyResponse]) -> None:
        loop = self._loop()
        if loop is None:
            if inspect.iscoroutine(result):
                result.close()
            log.error("async HTTP app on an engine without an event loop (use asyncio or uvloop)")
            self._respond(session, request, _SERVER_ERROR)
            return
        session.busy = True

        async def run() -> AnyResponse:
            return await result

        task = session.app_task = loop.create_task(run())
        session.app_request = request

        def done(task: Any) -> None:
            session.app_task = session.app_request = None
            if session.conn.closed:  # the client left: nobody to answer, the app's end is its news
                if not task.cancelled() and task.exception() is not None:
                    log.debug("HTTP app ended with %r after its client left", task.exception())
                return
            try:
                response = task.result()
            except BaseException:  # the app's failure, or its cancellation at stop: a 500, logged
                log.exception("HTTP app failed on %s %r", request.method, request.target)
                response = _SERVER_ERROR
            with session.lock:
                session.busy = False
                if not session.conn.closed:
                    self._respond(session, request, response)
                    self._advance(session)

        task.add_done_callback(done)

    def _respond(self, session: _Session, request: Request, response: object) -> None:
        if not isinstance(response, Response | StreamingResponse):
            log.error("HTTP app returned %r, not a Response", type(response).__name__)
            response = _SERVER_ERROR
        elif (
            type(response) is StreamingResponse
            and isinstance(response.chunks, AsyncIterable)
            and (request.method == "HEAD" or self._loop() is None)
        ):
            _close_soon(response.chunks, self._loop())  # it will not be read
            if request.method != "HEAD":
                log.error("async streaming body needs an engine with an event loop (asyncio, uvloop)")
                response = _SERVER_ERROR
        close = not request.keep_alive
        out = session.out
        if type(response) is Response:
            out.append(response.prefix)
            out.append(self._date.get())
            out.append(CLOSE if close else KEEP_ALIVE if request.version == "1.0" else END)
            if response.body and request.method != "HEAD":
                out.append(response.body)
        else:
            assert isinstance(response, StreamingResponse)
            chunked = request.version == "1.1"
            close = close or not chunked  # an HTTP/1.0 stream ends with the connection
            out.append(response_prefix(response.status, response.lines, None, chunked=chunked))
            out.append(self._date.get())
            out.append(CLOSE if close else END)
            if request.method != "HEAD":
                session.stream_chunked = chunked
                session.stream_closes = close
                session.busy = True
                self._flush(session)
                chunks = response.chunks
                if isinstance(chunks, AsyncIterable):
                    loop = self._loop()
                    assert loop is not None  # checked above
                    session.stream_task = loop.create_task(self._send_async(session, chunks))
                else:
                    session.stream = iter(chunks)
                    self._pump(session)
        if close:
            session.pending.clear()
            session.rejected = None
            session.proto.reading = False
            if not session.busy:
                self._flush(session)
                session.conn.close()

    def _pump(self, session: _Session) -> None:
        """Write a streaming response's pieces while the connection takes them; end it when they run out."""
        conn = session.conn
        stream = session.stream
        chunked = session.stream_chunked
        while stream is not None and conn.writable and not conn.closed:
            try:
                chunk = next(stream, None)
            except Exception:
                log.exception("HTTP streaming response failed; aborting its connection")
                session.stream = None
                conn.abort()
                return
            try:
                if chunk is None:
                    self._end_stream(session)
                    return
                if chunk:
                    conn.writelines([b"%x\r\n" % len(chunk), chunk, b"\r\n"] if chunked else [chunk])
            except ConnectionClosed:
                session.stream = None
                return

    def _end_stream(self, session: _Session) -> None:
        """The streaming body ended: end the chunked body, or the connection that delimits it."""
        session.stream = None
        session.busy = False
        conn = session.conn
        if session.stream_chunked:
            conn.write(b"0\r\n\r\n")
        if session.stream_closes:
            conn.close()  # else the requests pipelined behind it are answered next (_advance)

    async def _send_async(self, session: _Session, chunks: AsyncIterable[bytes]) -> None:
        """Send an async body's pieces, taking each only while the connection is under its high-water mark."""
        conn = session.conn
        loop = asyncio.get_running_loop()
        iterator = aiter(chunks)
        try:
            while True:
                while not conn.writable and not conn.closed:
                    session.drained = loop.create_future()
                    await session.drained
                if conn.closed:
                    return
                try:
                    chunk = await anext(iterator)
                except StopAsyncIteration:
                    break
                if chunk:
                    with session.lock:
                        conn.writelines(
                            [b"%x\r\n" % len(chunk), chunk, b"\r\n"] if session.stream_chunked else [chunk]
                        )
            with session.lock:
                self._end_stream(session)
                self._advance(session)
        except ConnectionClosed:
            return
        except Exception:
            log.exception("HTTP streaming response failed; aborting its connection")
            conn.abort()
        finally:
            session.drained = None
            session.stream_task = None
            close = getattr(iterator, "aclose", None)
            if close is not None:
                await close()

    def _loop(self) -> asyncio.AbstractEventLoop | None:
        return self._server.loop if self._server is not None else None

    def _flush(self, session: _Session) -> bool:
        """Write what is encoded; True if there was anything."""
        out = session.out
        if not out:
            return False
        session.out = []
        try:  # noqa: SIM105 - contextlib.suppress costs three Python calls per read
            session.conn.write(out[0] if len(out) == 1 else b"".join(out))
        except ConnectionClosed:
            pass  # the peer is gone: nothing to answer
        return True

    # -- timeouts ------------------------------------------------------------------------------

    def _set_deadline(self, session: _Session, responded: bool) -> None:
        """Set the connection's phase and deadline after a turn; ``responded``: it wrote a response.

        The idle timeout runs from the last response: a connection that keeps sending requests
        is never idle, however long it lives (its first deadline was the header timeout from
        its open).
        """
        if session.busy or session.pending:
            session.phase = _BUSY
            session.deadline = None
        elif session.head is not None:
            if session.phase != _BODY:
                session.phase = _BODY
                session.deadline = time.monotonic() + self.timeouts.body
        elif session.proto.in_request:
            if session.phase not in (_HEAD, _WAIT_FIRST):
                session.phase = _HEAD
                session.deadline = time.monotonic() + self.timeouts.header
        elif responded or session.phase not in (_IDLE, _WAIT_FIRST):
            session.phase = _IDLE
            session.deadline = time.monotonic() + self.timeouts.idle

    def _sweep(self) -> None:
        now = time.monotonic()
        for session in list(self._sessions):
            deadline = session.deadline
            if deadline is not None and deadline <= now:
                with session.lock:
                    self._expire(session)

    def _expire(self, session: _Session) -> None:
        conn = session.conn
        session.deadline = None
        if conn.closed or session.busy or session.pending:
            return
        session.proto.reading = False
        if session.phase in (_HEAD, _BODY) or (session.phase == _WAIT_FIRST and session.proto.in_request):
            log.info("request from %s not received in time; closing", conn.peer)
            try:
                conn.write(_TIMEOUT_408)
            except ConnectionClosed:
                return
        conn.close()


def create_http_server(
    app: App,
    engine: str | None = None,
    *,
    limits: Limits = DEFAULT_LIMITS,
    timeouts: Timeouts | None = None,
    parser: str = "auto",
    **options: Any,
) -> Server:
    """An unstarted server for ``app`` on ``engine``; raises EngineUnavailable or ValueError (bad options)."""
    return create_server(HttpHandler(app, limits, timeouts, parser=parser), engine, **options)


def _close_soon(chunks: AsyncIterable[bytes], loop: asyncio.AbstractEventLoop | None) -> None:
    """Let an async body that will not be read release what it holds (its ``aclose``), if it can."""
    close = getattr(chunks, "aclose", None)
    if close is not None and loop is not None:
        loop.create_task(close())
