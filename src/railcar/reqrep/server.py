"""Request–response servers: a handler per request, per batch, or per numpy array, on any engine.

The handler only joins an engine to the sans-I/O answering of ``reqrep.answering`` (and,
for an ``async def`` service, to the tasks of ``reqrep.async_service``).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import time
from collections.abc import Callable
from typing import Any, cast

from railcar.codecs import CodecFactory, FixedSizeCodec, codec_factory
from railcar.engine import create_server, server_class
from railcar.engine.api import Conn, Handler, Server
from railcar.engine.sweeper import Sweeper, tick_for
from railcar.errors import ConnectionClosed
from railcar.proto.reqrep import DEFAULT_MAX_FRAME, REQUEST, FrameReader, encode_conn_error
from railcar.reqrep.answering import MODES, Answerer, Mode, Session
from railcar.reqrep.async_service import DEFAULT_MAX_IN_PROGRESS, AsyncAnswerer, AsyncSession

log = logging.getLogger("railcar.reqrep")

#: Seconds a frame may take to arrive whole, from its first byte.
DEFAULT_FRAME_TIMEOUT = 30.0
#: The server skips the payload of a REQUEST frame over its limit and fails the frame's ids.
_SKIP_KINDS = frozenset({REQUEST})


class ReqRepHandler(Handler):
    """Engine handler that decodes request frames, calls the service and writes reply frames.

    Every read is answered with one write: the replies to all the frames it completed.
    A frame must arrive whole within ``frame_timeout`` seconds of its first byte (a peer
    that stalls inside one gets a protocol error and is closed); with ``idle_timeout``,
    a connection that sent nothing for that long, with nothing owed to it, is closed.
    """

    def __init__(
        self,
        service: Callable[..., Any],
        codec: str | CodecFactory,
        mode: Mode = "item",
        max_frame: int = DEFAULT_MAX_FRAME,
        max_in_progress: int = DEFAULT_MAX_IN_PROGRESS,
        frame_timeout: float | None = DEFAULT_FRAME_TIMEOUT,
        idle_timeout: float | None = None,
    ) -> None:
        """Check the service against the mode; raises ValueError: unknown mode or codec, limit too low."""
        for name, timeout in (("frame_timeout", frame_timeout), ("idle_timeout", idle_timeout)):
            if timeout is not None and not 0 < timeout < math.inf:
                raise ValueError(f"{name} must be a positive number of seconds or None, not {timeout}")
        if max_frame < 64:
            raise ValueError(f"max_frame must be at least 64 bytes, not {max_frame}")
        if max_in_progress < 1:
            raise ValueError(f"max_in_progress must be at least 1, not {max_in_progress}")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        self._factory = codec_factory(codec) if isinstance(codec, str) else codec
        probe = self._factory()
        if mode == "array" and not isinstance(probe, FixedSizeCodec):
            raise ValueError(f"mode 'array' needs a fixed-size codec, not {probe.name!r}")
        self._async: AsyncAnswerer | None = None
        if inspect.iscoroutinefunction(service):
            if mode == "array":
                raise ValueError("mode 'array' needs a synchronous service")
            self._async = AsyncAnswerer(service, max_in_progress)
        self._answer = Answerer(service, mode).answer
        self._max_frame = max_frame
        self._frame_timeout = frame_timeout
        self._idle_timeout = idle_timeout
        timeouts = [t for t in (frame_timeout, idle_timeout) if t is not None]
        self._sweeper = Sweeper(tick_for(*timeouts), self._sweep) if timeouts else None
        self._conns: set[Conn] = set()

    @property
    def needs_loop(self) -> bool:
        """True for an async service: it runs on the server's event loop (``Server.loop``)."""
        return self._async is not None

    def on_start(self, server: Server) -> None:
        """Run an async service's tasks on the server's event loop, and start enforcing the timeouts."""
        if self._async is not None:
            self._async.run_on(server.loop)
        if self._sweeper is not None:
            self._sweeper.start(server)

    def on_open(self, conn: Conn) -> None:
        """Give the connection its own frame reader and codec."""
        session = Session if self._async is None else AsyncSession
        conn.context["reqrep"] = session(
            FrameReader(self._max_frame, _SKIP_KINDS), self._factory(), last_read=time.monotonic()
        )
        self._conns.add(conn)

    def on_data(self, conn: Conn, data: memoryview) -> None:
        """Answer every complete request frame in ``data`` with one write."""
        session: Session = conn.context["reqrep"]
        out = bytearray()
        frames, error = session.receive(data, out)
        if self._sweeper is not None:
            now = session.last_read = time.monotonic()
            if not session.reader.buffered:
                session.partial_since = None
            elif frames or session.partial_since is None:
                session.partial_since = now  # a new frame began in this read
        if frames:
            if self._async is not None:
                self._async.start(conn, cast(AsyncSession, session), frames)
            else:
                self._answer(session, frames, out)
        session.log_failed(conn.peer)
        if error is not None:
            log.warning("protocol error from %s: %s", conn.peer, error)
            encode_conn_error(out, f"protocol error: {error}")
            conn.write(out)
            conn.close()
        elif out:
            conn.write(out)

    def on_eof(self, conn: Conn) -> bool:
        """Tell a peer that stopped sending inside a frame that the frame was cut short; then close."""
        session: Session = conn.context["reqrep"]
        if session.reader.buffered:
            error = f"connection ended inside a frame ({session.reader.buffered} bytes of it received)"
            log.warning("protocol error from %s: %s", conn.peer, error)
            out = bytearray()
            encode_conn_error(out, f"protocol error: {error}")
            conn.write(out)
        return False

    def on_close(self, conn: Conn, exc: BaseException | None) -> None:
        """Cancel the requests of an async service still in progress: nobody is left to answer."""
        self._conns.discard(conn)
        if self._async is not None:
            self._async.cancel(conn.context["reqrep"])

    def _sweep(self) -> None:
        """Close the connections past a timeout (on the engine's thread, every tick)."""
        now = time.monotonic()
        for conn in list(self._conns):
            session: Session = conn.context["reqrep"]
            began = session.partial_since
            if self._frame_timeout is not None and began is not None and now - began >= self._frame_timeout:
                error = f"frame not received whole within {self._frame_timeout:g} s"
                log.warning("protocol error from %s: %s", conn.peer, error)
                out = bytearray()
                encode_conn_error(out, f"protocol error: {error}")
                with contextlib.suppress(ConnectionClosed):
                    conn.write(out)
                conn.close()
            elif (
                self._idle_timeout is not None
                and began is None
                and now - session.last_read >= self._idle_timeout
                and not session.busy
                and conn.write_buffer_size == 0
            ):
                log.info("closing %s: idle for %g s", conn.peer, self._idle_timeout)
                conn.close()


def create_reqrep_server(
    service: Callable[..., Any],
    codec: str | CodecFactory = "int32",
    *,
    mode: Mode = "item",
    engine: str | None = None,
    max_frame: int = DEFAULT_MAX_FRAME,
    max_in_progress: int = DEFAULT_MAX_IN_PROGRESS,
    frame_timeout: float | None = DEFAULT_FRAME_TIMEOUT,
    idle_timeout: float | None = None,
    **options: Any,
) -> Server:
    """Make an unstarted request–response server; raises ValueError or EngineUnavailable.

    ``service`` takes one request and returns its reply (mode "item", sync or async),
    takes a list and returns a list (mode "batch"), or takes a numpy array of
    fixed-size records and returns one of the same length (mode "array"). An async
    service needs an engine with an event loop (``Server.has_loop``) and has at most
    ``max_in_progress`` requests of a connection in progress (or one larger frame); past
    that the connection is not read until some are answered.  ``frame_timeout`` and
    ``idle_timeout`` (None: no limit) are described on ``ReqRepHandler``.
    """
    handler = ReqRepHandler(service, codec, mode, max_frame, max_in_progress, frame_timeout, idle_timeout)
    server_type = server_class(engine)
    if handler.needs_loop and not server_type.has_loop:
        raise ValueError(f"an async service needs an engine with an event loop, not {server_type.engine!r}")
    return create_server(handler, engine, **options)
