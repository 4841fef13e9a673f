"""What every reactor loop needs besides I/O: cross-thread calls, deferred events, stopping, accept pauses.

Nothing here waits for I/O.  A loop watches ``calls.fileno()`` (a readiness loop
registers it; a completion loop keeps a read submitted on it), asks
``ReactorCore.timeout()`` how long it may wait, runs ``events.deliver()`` at the
end of every turn, and ends when ``finished`` says so.  The epoll engine runs on
it, and a completion-based engine can run on it unchanged.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sized
from typing import Generic, Protocol, TypeVar

from railcar.engine._failures import call_guarded, call_logged, call_on_close
from railcar.engine.api import (
    Conn,
    DatagramEndpoint,
    DatagramServer,
    Handler,
    Server,
    ServerOptions,
    Service,
    data_callback,
)
from railcar.engine.listen import bind_datagram, listen

log = logging.getLogger("railcar.engine")

STOP_POLL = 0.05  # while stopping, how often a loop looks whether abort_stop() was called
ACCEPT_PAUSE = 0.1  # how long accepting rests when the process is out of descriptors or memory
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Wakeup:
    """An eventfd another thread sets to wake a loop waiting on it."""

    __slots__ = ("_fd",)

    def __init__(self) -> None:
        self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def fileno(self) -> int:
        """The descriptor to wait on; it turns readable once ``set`` was called."""
        return self._fd

    def set(self) -> None:
        """Wake the loop; raises OSError once closed."""
        os.eventfd_write(self._fd, 1)

    def clear(self) -> None:
        """Consume the wake-ups so far (the loop calls it before looking at what woke it)."""
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._fd)

    def close(self) -> None:
        """Release the descriptor."""
        os.close(self._fd)


class CallQueue:
    """Callbacks other threads hand to the loop thread, each waking it; closed for good when the loop ends."""

    __slots__ = ("_calls", "_lock", "_open", "_wakeup")

    def __init__(self) -> None:
        self._calls: collections.deque[Callable[[], object]] = collections.deque()
        self._wakeup = Wakeup()
        # The lock makes "still open" and "queued and woken" one step, so close() never
        # strands a callback or races a write to the closed eventfd.
        self._lock = threading.Lock()
        self._open = True

    def fileno(self) -> int:
        """The descriptor the loop watches for queued calls."""
        return self._wakeup.fileno()

    def put(self, callback: Callable[[], object]) -> None:
        """Queue ``callback`` for the loop thread and wake it; raises RuntimeError once the loop has ended."""
        with self._lock:
            if not self._open:
                raise RuntimeError("server is not running")
            self._calls.append(callback)
            self._wakeup.set()

    def run(self) -> None:
        """Run every queued call on the loop thread; one that raises is logged and the rest still run."""
        self._wakeup.clear()
        calls = self._calls
        while calls:
            call_logged(calls.popleft())

    def close(self) -> None:
        """Refuse further calls, run the ones already queued, and release the wake-up descriptor."""
        with self._lock:
            self._open = False
            self._wakeup.close()
        calls = self._calls
        while calls:
            call_logged(calls.popleft())


class DeferredEvents:
    """on_writable and on_close calls collected during a turn and made at its end.

    Deferring them means a handler never re-enters the loop from inside a write,
    and on_close always comes after the last on_data of its turn.
    """

    __slots__ = ("closed", "handler", "writable")

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.closed: list[tuple[Conn, BaseException | None]] = []
        self.writable: list[Conn] = []

    def deliver(self) -> None:
        """Make the collected calls, including any the handlers cause meanwhile."""
        handler = self.handler
        while self.writable:
            writable, self.writable = self.writable, []
            for conn in writable:
                if not conn.closed:
                    call_guarded(conn, handler.on_writable, conn)
        while self.closed:
            closed, self.closed = self.closed, []
            for conn, exc in closed:
                call_on_close(handler, conn, exc)


class StopDeadline:
    """When a stop under way gives up waiting for connections to flush (None: not stopping)."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at: float | None = None

    def begin(self, deadline: float) -> None:
        """Start stopping: connections get ``deadline`` seconds from now."""
        self.at = time.monotonic() + deadline

    @property
    def stopping(self) -> bool:
        """True once a stop has begun."""
        return self.at is not None

    def timeout(self) -> float | None:
        """How long the loop may wait before it must look again (None: no limit)."""
        if self.at is None:
            return None
        return min(self.at - time.monotonic(), STOP_POLL)

    def finished(self, open_connections: int, abort_now: bool) -> bool:
        """True once stopping and nothing is left to wait for: no connections, the deadline, or an abort."""
        return self.at is not None and (not open_connections or abort_now or time.monotonic() >= self.at)


class AcceptPause:
    """Rests accepting for a while when the process runs out of descriptors or memory, instead of spinning."""

    __slots__ = ("until",)

    def __init__(self) -> None:
        self.until = 0.0

    def pause_for(self, exc: OSError) -> bool:
        """Start a pause if ``exc`` says resources ran out and return True; False for other accept errors."""
        if exc.errno not in _OUT_OF_RESOURCES:
            return False
        log.warning("cannot accept (%s); pausing accepts for %d ms", exc.strerror, ACCEPT_PAUSE * 1000)
        self.until = time.monotonic() + ACCEPT_PAUSE
        return True

    @property
    def paused(self) -> bool:
        """True from a pause until ``resume``."""
        return self.until != 0.0

    def due(self) -> bool:
        """True when a pause is over and the loop should ``resume``."""
        return self.until != 0.0 and time.monotonic() >= self.until

    def timeout(self) -> float | None:
        """Seconds until the pause is over (None: not paused)."""
        return self.until - time.monotonic() if self.until else None

    def resume(self) -> None:
        """End the pause; the loop starts accepting again."""
        self.until = 0.0


class ReactorCore:
    """One reactor's shared state: its call queue, deferred events, stop deadline and accept pause."""

    __slots__ = ("accepts", "calls", "events", "stop")

    def __init__(self, handler: Handler) -> None:
        self.calls = CallQueue()
        self.events = DeferredEvents(handler)
        self.stop = StopDeadline()
        self.accepts = AcceptPause()

    def timeout(self) -> float | None:
        """How long the loop may wait for I/O (None: until something happens; never negative)."""
        if self.stop.at is None and not self.accepts.until:
            return None  # the common case, once per turn: no list, no clock
        waits = [t for t in (self.stop.timeout(), self.accepts.timeout()) if t is not None]
        return max(0.0, min(waits)) if waits else None

    def adopted_peer(self, sock: socket.socket) -> tuple[object, ...] | str | None:
        """The peer of a socket handed to ``adopt``, or None once it is closed (stopping, or gone)."""
        if self.stop.stopping:
            sock.close()  # adopted while stopping: closed at once, like a connection accepted then
            return None
        try:
            peer: tuple[object, ...] | str = sock.getpeername()
        except OSError as exc:
            # A peer that reset between the acceptor's accept and this adopt: ordinary under
            # load (a warning per connection would flood the log), so not worth more than debug.
            log.debug("adopted socket is no longer connected (%s); closing it", exc.strerror)
            sock.close()
            return None
        return peer

    def close(self) -> None:
        """End the loop's life: run the calls still queued and deliver what they and the last turn caused."""
        self.calls.close()
        self.events.deliver()


class Run(Protocol):
    """One run of a reactor engine's server, start to stop: what ``_ReactorService`` asks of it."""

    @property
    def core(self) -> ReactorCore:
        """The run's reactor core (its call queue takes ``call_soon_threadsafe``'s calls)."""

    @property
    def thread(self) -> threading.Thread:
        """The loop thread, started by ``_ReactorService._start``."""

    def stop(self, deadline: float) -> None:
        """Stop taking input, flush what is queued within ``deadline`` s and wait for the loop thread."""


RunT = TypeVar("RunT", bound=Run)


class _ReactorService(Service, Generic[RunT]):
    """Start, stop and cross-thread calls of a service whose one socket a reactor run serves.

    Each start binds a new socket (``_bind``) and makes a new run around it (``_new_run``),
    so a stopped service restarts with nothing of the last run.
    """

    _reactor: RunT | None = None

    def _bind(self) -> socket.socket:
        raise NotImplementedError

    def _new_run(self, sock: socket.socket) -> RunT:
        raise NotImplementedError

    def call_soon_threadsafe(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` on the engine's thread (for Conn methods); raises RuntimeError if not running."""
        if self._reactor is None:
            raise RuntimeError("server is not running")
        self._reactor.core.calls.put(callback)

    def _start(self) -> None:
        sock = self._bind()
        try:
            reactor = self._new_run(sock)
        except BaseException:
            sock.close()
            raise
        self._address = sock.getsockname()
        self._reactor = reactor
        reactor.thread.start()

    def _stop(self, deadline: float) -> None:
        assert self._reactor is not None
        self._reactor.stop(deadline)
        self._reactor = None


class ReactorRun(Run, Protocol):
    """One run of a reactor engine's stream server: its connections, and adopting more."""

    @property
    def conns(self) -> Sized:
        """The open connections."""

    def adopt(self, sock: socket.socket) -> None:
        """Open a connection on ``sock`` on the loop thread."""


class ReactorServer(_ReactorService[ReactorRun], Server):
    """A server whose connections one loop thread drives on the reactor core (epoll, uring)."""

    def __init__(self, handler: Handler, options: ServerOptions) -> None:
        super().__init__(handler, options)
        self.on_data = data_callback(handler, options)

    def _bind(self) -> socket.socket:
        return listen(self.options)

    @property
    def active_connections(self) -> int:
        """Number of open connections."""
        reactor = self._reactor
        return 0 if reactor is None else len(reactor.conns)

    def _adopt(self, sock: socket.socket) -> None:
        if self._reactor is None:
            raise RuntimeError("server is not running")
        self._reactor.adopt(sock)


class DatagramReactorRun(Run, Protocol):
    """One run of a datagram reactor: the endpoint its handlers send with."""

    @property
    def endpoint(self) -> DatagramEndpoint:
        """The endpoint handlers send with."""


class ReactorDatagramServer(_ReactorService[DatagramReactorRun], DatagramServer):
    """A server whose one UDP socket a loop thread drives on the reactor core (epoll, uring)."""

    def _bind(self) -> socket.socket:
        return bind_datagram(self.options)

    @property
    def endpoint(self) -> DatagramEndpoint:
        """The endpoint handlers send with; raises RuntimeError while the server is not running."""
        if self._reactor is None:
            raise RuntimeError("server is not running")
        return self._reactor.endpoint
