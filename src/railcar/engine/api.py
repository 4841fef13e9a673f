"""The engine contract: a Handler reacts to connection events, a Conn is what it acts on.

Every engine (asyncio, uvloop, epoll, threads) implements only this module's
``Conn`` and ``Server`` and calls the ``Handler`` the same way, so a handler
written once runs unchanged on all of them.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from railcar.errors import InboundOverflow

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger("railcar.engine")

Address = tuple[Any, ...] | str
Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """Where and how a server listens; every engine honours every field."""

    host: str = "127.0.0.1"
    port: int = 0
    unix: str | None = None
    backlog: int = 2048
    nodelay: bool = True
    read_buffer: int = 256 * 1024
    high_water: int = 1024 * 1024
    low_water: int = 256 * 1024
    max_inbound: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        """Check that the limits are consistent; raises ValueError when they are not."""
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.read_buffer < 1024:
            raise ValueError(f"read_buffer must be at least 1024 bytes, got {self.read_buffer}")
        if not 0 <= self.low_water <= self.high_water:
            raise ValueError("need 0 <= low_water <= high_water")
        if self.max_inbound < self.read_buffer:
            raise ValueError("max_inbound must be at least read_buffer")


class Handler:
    """Connection callbacks with do-nothing defaults; subclass and override what you need.

    One handler instance serves every connection of a server; keep per-connection
    state in ``conn.context``.  Callbacks run on the engine's thread (on the
    ``threads`` engine: on the connection's own thread).
    """

    #: Pull mode: the engine keeps unread bytes in the connection's inbound buffer
    #: and ``on_data`` receives all of them; consume with ``conn.next``/``conn.discard``.
    buffered: ClassVar[bool] = False

    def on_start(self, server: Server) -> None:
        """Called once the server accepts connections."""

    def on_open(self, conn: Conn) -> None:
        """Called when a connection is accepted, before any data."""

    def on_data(self, conn: Conn, data: memoryview) -> None:
        """Called with received bytes; ``data`` is valid only during the call."""

    def on_eof(self, conn: Conn) -> bool:
        """Called when the peer shuts down its sending side; return True to keep writing."""
        return False

    def on_writable(self, conn: Conn) -> None:
        """Called when output that went over the high-water mark has drained below the low one."""

    def on_close(self, conn: Conn, exc: BaseException | None) -> None:
        """Called once when the connection is gone; ``exc`` says why, None for a clean close."""


class Conn:
    """One accepted connection, as a handler sees it; engines subclass it."""

    __slots__ = (
        "_context",
        "_inbound",
        "_read_pos",
        "_user_paused",
        "_write_paused",
        "local",
        "peer",
    )

    def __init__(self, peer: Address, local: Address) -> None:
        self.peer = peer
        self.local = local
        self._context: dict[str, Any] | None = None
        self._inbound: bytearray | None = None
        self._read_pos = 0
        self._user_paused = False
        self._write_paused = False

    @property
    def context(self) -> dict[str, Any]:
        """Per-connection storage for the handler (created on first use)."""
        if self._context is None:
            self._context = {}
        return self._context

    # -- output: implemented by each engine ---------------------------------------

    def write(self, data: Buffer) -> None:
        """Queue bytes for sending; raises ConnectionClosed if the connection is closed."""
        raise NotImplementedError

    def writelines(self, chunks: Iterable[Buffer]) -> None:
        """Queue several buffers, sent with one system call where possible; raises ConnectionClosed."""
        raise NotImplementedError

    def close(self) -> None:
        """Close after the queued output has been sent; a no-op if already closing."""
        raise NotImplementedError

    def abort(self) -> None:
        """Close at once, discarding queued output."""
        raise NotImplementedError

    def fileno(self) -> int:
        """The socket's file descriptor, for socket options; never read or write it directly."""
        raise NotImplementedError

    @property
    def write_buffer_size(self) -> int:
        """Bytes accepted by ``write`` that the kernel has not taken yet."""
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        """True once ``close``/``abort`` was called or the connection was lost."""
        raise NotImplementedError

    # -- input flow control -----------------------------------------------------------

    def pause_reading(self) -> None:
        """Stop delivering data until ``resume_reading``."""
        if not self._user_paused:
            self._user_paused = True
            self._apply_reading()

    def resume_reading(self) -> None:
        """Deliver data again after ``pause_reading``."""
        if self._user_paused:
            self._user_paused = False
            self._apply_reading()

    @property
    def reading(self) -> bool:
        """False while reading is paused, by the handler or by output backpressure."""
        return not (self._user_paused or self._write_paused)

    @property
    def writable(self) -> bool:
        """False while queued output is over the high-water mark (wait for ``on_writable``)."""
        return not self._write_paused

    def _apply_reading(self) -> None:
        """Make the engine start or stop reading to match ``reading``."""
        raise NotImplementedError

    def _set_write_paused(self, paused: bool) -> None:
        """Record output backpressure and stop or resume reading with it."""
        if paused != self._write_paused:
            self._write_paused = paused
            self._apply_reading()

    # -- pull mode: the inbound buffer -------------------------------------------------

    @property
    def inbound_buffered(self) -> int:
        """Number of received bytes not yet consumed (pull-mode handlers)."""
        if self._inbound is None:
            return 0
        return len(self._inbound) - self._read_pos

    def peek(self, n: int = -1) -> bytes:
        """Return up to ``n`` unread bytes (all if ``n < 0``) without consuming them."""
        inbound = self._inbound
        if inbound is None:
            return b""
        end = len(inbound) if n < 0 else min(len(inbound), self._read_pos + n)
        with memoryview(inbound) as view:
            return view[self._read_pos : end].tobytes()

    def next(self, n: int = -1) -> bytes:
        """Return and consume up to ``n`` unread bytes (all if ``n < 0``)."""
        chunk = self.peek(n)
        self._read_pos += len(chunk)
        return chunk

    def discard(self, n: int = -1) -> int:
        """Consume up to ``n`` unread bytes (all if ``n < 0``) and return how many."""
        available = self.inbound_buffered
        count = available if n < 0 else min(n, available)
        self._read_pos += count
        return count

    def _feed_inbound(self, data: memoryview, handler: Handler, limit: int) -> None:
        """Append ``data`` to the inbound buffer and offer every unread byte to the handler.

        Raises InboundOverflow when the handler leaves more than ``limit`` bytes unread.
        """
        inbound = self._inbound
        if inbound is None:
            inbound = self._inbound = bytearray()
        inbound += data
        with memoryview(inbound) as view, view[self._read_pos :] as unread:
            handler.on_data(self, unread)
        # Compact once per delivery, not per message consumed.
        del inbound[: self._read_pos]
        self._read_pos = 0
        if not inbound:
            self._inbound = None  # idle connections hold no buffer
        elif len(inbound) > limit:
            raise InboundOverflow(f"{len(inbound)} unread bytes exceed the inbound limit of {limit}")


DataCallback = Callable[[Conn, memoryview], None]


def data_callback(handler: Handler, options: ServerOptions) -> DataCallback:
    """Return the function an engine calls with each received chunk for ``handler``."""
    if not handler.buffered:
        return handler.on_data
    limit = options.max_inbound

    def feed(conn: Conn, data: memoryview) -> None:
        conn._feed_inbound(data, handler, limit)

    return feed


def report_handler_error(conn: Conn, exc: BaseException) -> None:
    """Log an exception raised by a handler; the engine then aborts only that connection."""
    log.error("handler failed on connection %s; closing it", conn.peer, exc_info=exc)


class Server:
    """A listening server on some engine: start, stop, and how many connections it has."""

    engine: ClassVar[str] = "?"
    #: True for engines that run their handlers on an asyncio event loop (``loop``).
    has_loop: ClassVar[bool] = False

    def __init__(self, handler: Handler, options: ServerOptions) -> None:
        self.handler = handler
        self.options = options
        self._address: Address | None = None
        # Set by abort_stop(); a plain flag, not an Event, so that a signal handler may set it
        # while the main thread waits inside stop().
        self._abort_now = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the handlers run on while the server runs, for their tasks; None without one.

        Handlers get it in ``on_start`` and schedule coroutines with ``loop.create_task``;
        engines whose ``has_loop`` is False (epoll, threads) always return None.
        """
        return None

    @property
    def address(self) -> Address:
        """The bound address: (host, port, ...) for TCP, the path for Unix sockets."""
        if self._address is None:
            raise RuntimeError("server is not started")
        return self._address

    @property
    def port(self) -> int:
        """The bound TCP port (0 for a Unix socket); raises RuntimeError before start."""
        address = self.address
        return 0 if isinstance(address, str) else int(address[1])

    @property
    def active_connections(self) -> int:
        """Number of open connections."""
        raise NotImplementedError

    def start(self) -> None:
        """Bind and begin accepting in the background; raises BindError if it cannot listen."""
        raise NotImplementedError

    def stop(self, deadline: float = 5.0) -> None:
        """Stop accepting, flush and close every connection, abort what remains after ``deadline`` s."""
        raise NotImplementedError

    def abort_stop(self) -> None:
        """Make a stop under way (or the next one) abort what remains now, not at its deadline.

        Safe to call from a signal handler or from any thread; a stop notices it within 50 ms.
        """
        self._abort_now = True

    def call_soon_threadsafe(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` on the engine's thread, where Conn methods may be called."""
        raise NotImplementedError

    def serve_forever(self, deadline: float = 5.0, ready: Callable[[], None] | None = None) -> None:
        """Start, block until SIGINT or SIGTERM, then stop within ``deadline``; main thread only.

        A second signal aborts what remains at once. ``ready`` is called once the server
        listens and the signals are handled, so a signal sent by whoever it tells can no
        longer kill the process unstopped.
        """
        stop_requested = threading.Event()

        def on_signal(signum: int, frame: object) -> None:
            if stop_requested.is_set():
                self.abort_stop()  # the user insists: no more waiting for slow readers
            stop_requested.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            if self._address is None:
                self.start()
            if ready is not None:
                ready()
            while not stop_requested.wait(3600):
                pass
        finally:
            # The handlers stay ours until stop() returns: a second SIGINT used to raise
            # KeyboardInterrupt inside stop(), leaving the asyncio engines' loop thread
            # running forever (the process never exited); the deadline bounds the stop.
            try:
                self.stop(deadline)
            finally:
                for sig, old in previous.items():
                    signal.signal(sig, old)

    def __enter__(self) -> Server:
        """Start the server; raises BindError if it cannot listen."""
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop the server with the default deadline."""
        self.stop()
