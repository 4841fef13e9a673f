"""The engine contract: a Handler reacts to connection events, a Conn is what it acts on.

Every engine (asyncio, uvloop, epoll, threads) implements only this module's
``Conn`` and ``Server`` and calls the ``Handler`` the same way, so a handler
written once runs unchanged on all of them.  Datagrams (UDP) have their own,
smaller contract: a ``DatagramHandler`` gets ``on_datagram`` calls and answers
through the server's one ``DatagramEndpoint`` (asyncio, uvloop, epoll and uring engines).
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Self

from railcar.engine.stop_latch import StopLatch
from railcar.errors import InboundOverflow

if TYPE_CHECKING:
    import asyncio

Address = tuple[Any, ...] | str
Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """Where and how a server listens; every engine honours every field.

    ``reuse_port`` sets SO_REUSEPORT before binding, so that several servers (in one
    process or many) listen on the same TCP port and the kernel spreads connections
    among them.  ``sock`` is a listening socket bound elsewhere (by a parent process,
    by socket activation): the server serves on a duplicate of it each time it
    starts, sets it non-blocking, and never closes the caller's socket, which stays
    the caller's to close; ``host``, ``port``, ``unix`` and ``backlog`` then do not apply.
    """

    host: str = "127.0.0.1"
    port: int = 0
    unix: str | None = None
    backlog: int = 2048
    nodelay: bool = True
    read_buffer: int = 256 * 1024
    high_water: int = 1024 * 1024
    low_water: int = 256 * 1024
    max_inbound: int = 16 * 1024 * 1024
    reuse_port: bool = False
    sock: socket.socket | None = None

    def __post_init__(self) -> None:
        """Check that the options are consistent; raises ValueError when they are not."""
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.read_buffer < 1024:
            raise ValueError(f"read_buffer must be at least 1024 bytes, got {self.read_buffer}")
        if not 0 <= self.low_water <= self.high_water:
            raise ValueError("need 0 <= low_water <= high_water")
        if self.max_inbound < self.read_buffer:
            raise ValueError("max_inbound must be at least read_buffer")
        if self.reuse_port and (self.unix is not None or self.sock is not None):
            raise ValueError("reuse_port applies to TCP sockets the server binds itself, not to unix or sock")
        if self.sock is not None:
            self._check_listening_socket(self.sock)

    def _check_listening_socket(self, sock: socket.socket) -> None:
        if self.unix is not None or self.port:
            raise ValueError("give either sock or an address (port, unix) to listen on, not both")
        if sock.type != socket.SOCK_STREAM:
            raise ValueError("sock must be a stream socket")
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise ValueError("sock must be listening (call its listen() first)")


class Handler:
    """Connection callbacks with do-nothing defaults; subclass and override what you need.

    One handler instance serves every connection of a server; keep per-connection
    state in ``conn.context``.  Callbacks run on the engine's thread (on the
    ``threads`` engine: on the connection's own thread).
    """

    #: Pull mode: the engine keeps unread bytes in the connection's inbound buffer
    #: and ``on_data`` receives all of them; consume with ``conn.next``/``conn.discard``.
    buffered: ClassVar[bool] = False
    #: True if ``on_data`` takes any bytes-like object, not only a memoryview: an engine that
    #: receives ``bytes`` (uvloop) then passes them on as they are instead of wrapping each
    #: read in a view of its own buffer (see docs/architecture.md, "uvloop").
    takes_bytes: ClassVar[bool] = False

    def on_start(self, server: Server) -> None:
        """Called once the server accepts connections."""

    def on_stop(self, server: Server) -> Awaitable[None] | None:
        """Called once per run when stopping, after every connection's on_close, on the engine's thread.

        On engines with a loop (``has_loop``) an awaitable it returns is awaited there, for at
        most the stop deadline, before the loop stops: a handler's async clean-up (an ASGI
        app's lifespan shutdown) runs on the loop its connections ran on.
        """
        return None

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


class Service:
    """What every server has, stream or datagram: the start/stop state machine and serve_forever.

    A service can be started again after ``stop``: each ``start`` binds anew (on
    ``options.sock`` again, or binding ``host``/``port`` again, so a service on port 0
    may come back on another port; ``address`` reports the new one), calls
    ``on_start`` again and serves exactly as the first time.  Stopping releases
    everything a run holds (sockets, connections, threads, loop), so nothing of the
    previous run can leak into the next.  Engines implement ``_start`` and ``_stop``;
    this class keeps the state machine, so that every engine restarts alike.
    """

    engine: ClassVar[str] = "?"
    #: True for engines that run their handlers on an asyncio event loop (``loop``).
    has_loop: ClassVar[bool] = False

    def __init__(self) -> None:
        self._address: Address | None = None
        self._running = False
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
        """The bound address: (host, port, ...) for IP, a Unix path; raises RuntimeError before start."""
        if self._address is None:
            raise RuntimeError("server is not started")
        return self._address

    @property
    def port(self) -> int:
        """The bound port (0 for a Unix socket); raises RuntimeError before start."""
        address = self.address
        return 0 if isinstance(address, str) else int(address[1])

    @property
    def running(self) -> bool:
        """True from a successful ``start`` until ``stop`` returns."""
        return self._running

    def start(self) -> None:
        """Listen and serve in the background, also after a stop; raises BindError, or RuntimeError."""
        if self._running:
            raise RuntimeError("server already started")
        self._abort_now = False  # an abort belongs to the run it stopped
        self._start()
        self._running = True

    def stop(self, deadline: float = 5.0) -> None:
        """Stop accepting, flush what is queued, abort what remains after ``deadline`` s."""
        if not self._running:
            return
        try:
            self._stop(deadline)
        finally:
            self._running = False

    @property
    def abort_requested(self) -> bool:
        """True once ``abort_stop`` was called since the last ``start``: a stop under way ends now."""
        return self._abort_now

    def abort_stop(self) -> None:
        """Make a stop under way (or the next one) abort what remains now, not at its deadline.

        Safe to call from a signal handler or from any thread; a stop notices it within 50 ms.
        """
        self._abort_now = True

    def call_soon_threadsafe(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` on the engine's thread (for Conn methods); raises RuntimeError if not running."""
        raise NotImplementedError

    # -- implemented by each engine -----------------------------------------------------------

    def _start(self) -> None:
        """Bind (``listen.listen``/``listen.bind_datagram``), set ``_address``, serve in the background.

        Raises BindError.
        """
        raise NotImplementedError

    def _stop(self, deadline: float) -> None:
        """Undo ``_start`` completely, giving queued output ``deadline`` seconds to flush."""
        raise NotImplementedError

    def serve_forever(self, deadline: float = 5.0, ready: Callable[[], None] | None = None) -> None:
        """Start, block until SIGINT or SIGTERM, then stop within ``deadline``; main thread only.

        A second signal aborts what remains at once. ``ready`` is called once the server
        listens and the signals are handled, so a signal sent by whoever it tells can no
        longer kill the process unstopped.
        """
        stop_requested = StopLatch()

        def on_signal(signum: int, frame: object) -> None:
            if stop_requested.requests:
                self.abort_stop()  # the user insists: no more waiting for slow readers
            stop_requested.request()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            if not self._running:
                self.start()
            if ready is not None:
                ready()
            stop_requested.wait()
        finally:
            # The handlers stay ours until stop() returns: a second SIGINT used to raise
            # KeyboardInterrupt inside stop(), leaving the asyncio engines' loop thread
            # running forever (the process never exited); the deadline bounds the stop.
            try:
                self.stop(deadline)
            finally:
                for sig, old in previous.items():
                    signal.signal(sig, old)
                stop_requested.close()

    def __enter__(self) -> Self:
        """Start the server; raises BindError if it cannot listen."""
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop the server with the default deadline."""
        self.stop()


class Server(Service):
    """A listening stream server on some engine: start, stop, and how many connections it has.

    Engines implement ``_start``, ``_stop`` and ``_adopt``.
    """

    def __init__(self, handler: Handler, options: ServerOptions) -> None:
        super().__init__()
        self.handler = handler
        self.options = options

    @property
    def active_connections(self) -> int:
        """Number of open connections."""
        raise NotImplementedError

    def adopt(self, sock: socket.socket) -> None:
        """Serve a connected stream socket accepted elsewhere as if this server had accepted it.

        The server owns ``sock`` from then on (it may come from another process, through
        SCM_RIGHTS).  Safe from any thread; the connection opens shortly after, on the
        engine's thread.  Raises ValueError if ``sock`` is not a connected stream socket
        and RuntimeError if the server is not running; either way ``sock`` stays the caller's.
        """
        if sock.type != socket.SOCK_STREAM:
            raise ValueError("only stream sockets can be adopted")
        try:
            sock.getpeername()
        except OSError as exc:
            raise ValueError(f"only connected sockets can be adopted ({exc.strerror})") from exc
        if not self._running:
            raise RuntimeError("server is not running")
        self._adopt(sock)

    def _adopt(self, sock: socket.socket) -> None:
        """Hand ``sock`` to the running engine; raises RuntimeError if it stopped meanwhile."""
        raise NotImplementedError


# -- datagrams -------------------------------------------------------------------------------

#: The largest UDP payload over IPv4 (65,535 minus the IP and UDP headers).
MAX_UDP_PAYLOAD = 65507
#: The largest UDP payload over IPv6 without jumbograms.
MAX_UDP6_PAYLOAD = 65527


@dataclass(frozen=True, slots=True)
class DatagramOptions:
    """Where a datagram server binds and its limits; every datagram engine honours every field.

    ``max_datagram`` is the largest datagram received or sent: a larger one received is
    counted (``DatagramStats.oversized``), logged and dropped whole, never delivered cut
    short; sending one raises ValueError.  ``send_queue`` bounds the bytes held while the
    kernel's send buffer is full: a datagram sent while that many are held is dropped,
    counted (``DatagramStats.send_dropped``) and logged — UDP may lose datagrams anyway,
    so a sender that outruns the network loses some rather than blocking the loop or
    growing without bound.  ``sock`` is a bound datagram socket (the server serves on a
    duplicate of it and never closes the caller's); ``host``/``port`` then do not apply.
    """

    host: str = "127.0.0.1"
    port: int = 0
    max_datagram: int = MAX_UDP_PAYLOAD
    send_queue: int = 1024 * 1024
    reuse_port: bool = False
    sock: socket.socket | None = None

    def __post_init__(self) -> None:
        """Check that the options are consistent; raises ValueError when they are not."""
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if not 1 <= self.max_datagram <= MAX_UDP6_PAYLOAD:
            raise ValueError(f"max_datagram must be in 1..{MAX_UDP6_PAYLOAD}, got {self.max_datagram}")
        if self.send_queue < 0:
            raise ValueError(f"send_queue must be at least 0 bytes, got {self.send_queue}")
        if self.sock is not None:
            if self.port or self.reuse_port:
                raise ValueError("give either sock or a port (with reuse_port) to bind, not both")
            if self.sock.type != socket.SOCK_DGRAM:
                raise ValueError("sock must be a datagram socket")
            if self.sock.family in (socket.AF_INET, socket.AF_INET6) and not self.sock.getsockname()[1]:
                raise ValueError("sock must be bound (call its bind() first)")


@dataclass(slots=True)
class DatagramStats:
    """What a datagram server counted since its last start (plain ints, readable from any thread)."""

    received: int = 0
    sent: int = 0
    #: received datagrams over ``max_datagram``, dropped
    oversized: int = 0
    #: datagrams dropped because the send queue was full
    send_dropped: int = 0
    #: sends the kernel refused (unreachable, no buffer space, ...)
    send_errors: int = 0
    #: datagrams whose ``on_datagram`` raised
    handler_errors: int = 0


class DatagramEndpoint:
    """The bound socket of a datagram server, as a handler sees it; engines subclass it.

    Call it on the engine's thread (from ``on_datagram``, or through
    ``server.call_soon_threadsafe``).
    """

    __slots__ = ("local", "stats")

    def __init__(self, local: Address, stats: DatagramStats) -> None:
        self.local = local
        self.stats = stats

    def send_to(self, addr: Address, data: Buffer) -> bool:
        """Send one datagram to ``addr``; False if dropped (send queue full, or the kernel refused it).

        Raises ConnectionClosed once the server stopped, ValueError over ``max_datagram``.
        """
        raise NotImplementedError

    def send_many(self, datagrams: Iterable[tuple[Address, Buffer]]) -> int:
        """Send several (addr, data) datagrams in order; return how many were not dropped.

        Raises ConnectionClosed once the server stopped, ValueError over ``max_datagram``
        (the datagrams before it are sent).
        """
        sent = 0
        for addr, data in datagrams:
            sent += self.send_to(addr, data)
        return sent

    @property
    def send_queue_size(self) -> int:
        """Bytes of datagrams accepted by ``send_to`` that the kernel has not taken yet."""
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        """True once the server stopped serving on this endpoint."""
        raise NotImplementedError


class DatagramHandler:
    """Datagram callbacks with do-nothing defaults; subclass and override what you need.

    One handler serves the server's one endpoint; callbacks run on the engine's thread.
    """

    def on_start(self, server: DatagramServer) -> None:
        """Called once the server receives datagrams."""

    def on_datagram(self, endpoint: DatagramEndpoint, addr: Address, data: Buffer) -> None:
        """Called with each datagram from ``addr``; ``data`` is valid only during the call.

        What it raises is counted (``handler_errors``) and logged; the server keeps serving.
        """


class DatagramServer(Service):
    """A bound datagram (UDP) server on some engine: start, stop, its endpoint and counters.

    Engines implement ``_start`` (bind with ``listen.bind_datagram``) and ``_stop`` (stop
    receiving, give the send queue ``deadline`` seconds to drain, close).
    """

    def __init__(self, handler: DatagramHandler, options: DatagramOptions) -> None:
        super().__init__()
        self.handler = handler
        self.options = options
        self.stats = DatagramStats()

    def start(self) -> None:
        """Bind and serve in the background with fresh counters; raises BindError, or RuntimeError."""
        if not self._running:
            self.stats = DatagramStats()
        super().start()

    @property
    def endpoint(self) -> DatagramEndpoint:
        """The endpoint handlers send with; raises RuntimeError while the server is not running."""
        raise NotImplementedError
