"""The epoll engine: a single-threaded reactor on ``select.epoll`` with non-blocking sockets.

Level-triggered readiness events; one ``recv_into`` a shared buffer per readable
connection per turn (fair to every connection); writes go straight to the socket
and only what the kernel refuses is queued, flushed with ``sendmsg`` on EPOLLOUT.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable
from itertools import islice

from railcar.engine.api import (
    Buffer,
    Conn,
    Handler,
    Server,
    ServerOptions,
    data_callback,
    report_handler_error,
)
from railcar.engine.listen import listen, set_nodelay
from railcar.errors import ConnectionClosed

log = logging.getLogger("railcar.engine.epoll")

_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_ERR = select.EPOLLERR | select.EPOLLHUP
_IOV_MAX = 1024  # buffers per sendmsg call (Linux UIO_MAXIOV)
_ACCEPTS_PER_TURN = 256  # keep accept storms from starving established connections
_STOP_POLL = 0.05  # while stopping, how often the reactor looks whether abort_stop() was called
_OPEN, _CLOSING, _CLOSED = 0, 1, 2


class _EpollConn(Conn):
    __slots__ = ("_eof", "_events", "_fd", "_out", "_out_size", "_reactor", "_sock", "_state")

    def __init__(self, reactor: EpollServer, sock: socket.socket, peer: tuple[object, ...] | str):
        super().__init__(peer, sock.getsockname())
        self._reactor = reactor
        self._sock = sock
        self._fd = sock.fileno()
        self._out: collections.deque[bytes | memoryview] = collections.deque()
        self._out_size = 0
        self._state = _OPEN
        self._events = _IN
        self._eof = False

    # -- output -----------------------------------------------------------------------------

    def write(self, data: Buffer) -> None:
        """Send bytes now, queueing what the kernel does not take; raises ConnectionClosed."""
        if self._state != _OPEN:
            raise ConnectionClosed(f"connection {self.peer} is closed")
        if self._out:
            self._enqueue(bytes(data))
            return
        try:
            sent = self._sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._reactor.lose(self, exc)
            return
        if sent < len(data):
            self._enqueue(bytes(memoryview(data)[sent:]))

    def writelines(self, chunks: Iterable[Buffer]) -> None:
        """Send several buffers with one ``sendmsg``, queueing the rest; raises ConnectionClosed."""
        if self._state != _OPEN:
            raise ConnectionClosed(f"connection {self.peer} is closed")
        pending = list(chunks)
        if not self._out:
            try:
                sent = self._sock.sendmsg(pending[:_IOV_MAX]) if pending else 0
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self._reactor.lose(self, exc)
                return
            pending = _skip(pending, sent)
        for chunk in pending:
            self._enqueue(bytes(chunk))

    def _enqueue(self, data: bytes | memoryview) -> None:
        if not data:
            return
        self._out.append(data)
        self._out_size += len(data)
        if len(self._out) == 1:
            self._update_events()
        if self._out_size > self._reactor.options.high_water:
            self._set_write_paused(True)

    def flush(self) -> None:
        """Send queued output now that the socket is writable."""
        out = self._out
        try:
            sent = self._sock.sendmsg(list(islice(out, _IOV_MAX)))
        except BlockingIOError:
            return
        except OSError as exc:
            self._reactor.lose(self, exc)
            return
        self._out_size -= sent
        while sent:
            head = out[0]
            if sent >= len(head):
                sent -= len(head)
                out.popleft()
            else:
                out[0] = memoryview(head)[sent:]
                sent = 0
        if not out:
            if self._state == _CLOSING:
                self._reactor.finish(self, None)
                return
            self._update_events()
        if self._write_paused and self._out_size <= self._reactor.options.low_water:
            self._set_write_paused(False)
            self._reactor.notify_writable(self)

    # -- life cycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close after the queued output has been sent; a no-op if already closing."""
        if self._state != _OPEN:
            return
        if self._out:
            self._state = _CLOSING
            self._update_events()
        else:
            self._reactor.finish(self, None)

    def abort(self) -> None:
        """Close at once, discarding queued output."""
        if self._state != _CLOSED:
            self._out.clear()
            self._out_size = 0
            self._reactor.finish(self, None)

    def fileno(self) -> int:
        """The socket's file descriptor, for socket options; never read or write it directly."""
        return self._fd

    @property
    def write_buffer_size(self) -> int:
        """Bytes accepted by ``write`` that the kernel has not taken yet."""
        return self._out_size

    @property
    def closed(self) -> bool:
        """True once ``close``/``abort`` was called or the connection was lost."""
        return self._state != _OPEN

    def _apply_reading(self) -> None:
        self._update_events()

    def _update_events(self) -> None:
        if self._state == _CLOSED:
            return
        wanted = _OUT if self._out else 0
        if self._state == _OPEN and not self._eof and self.reading:
            wanted |= _IN
        if wanted != self._events:
            self._events = wanted
            self._reactor.epoll.modify(self._fd, wanted)


def _skip(chunks: list[Buffer], count: int) -> list[Buffer]:
    """Return what remains of ``chunks`` after the first ``count`` bytes were sent."""
    for index, chunk in enumerate(chunks):
        size = len(chunk)
        if count < size:
            return [memoryview(chunk)[count:], *chunks[index + 1 :]]
        count -= size
    return []


class EpollServer(Server):
    """A reactor thread multiplexing every connection with epoll."""

    engine = "epoll"

    def __init__(self, handler: Handler, options: ServerOptions) -> None:
        super().__init__(handler, options)
        self.epoll = select.epoll()
        self._wakeup = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._conns: dict[int, _EpollConn] = {}
        self._on_data = data_callback(handler, options)
        self._buffer = bytearray(options.read_buffer)
        self._listener: socket.socket | None = None
        self._calls: collections.deque[Callable[[], object]] = collections.deque()
        self._closed: list[tuple[_EpollConn, BaseException | None]] = []
        self._writable: list[_EpollConn] = []
        self._thread: threading.Thread | None = None
        self._stop_at: float | None = None
        self._accept_paused_until = 0.0

    @property
    def active_connections(self) -> int:
        """Number of open connections."""
        return len(self._conns)

    def start(self) -> None:
        """Bind and begin accepting in the background; raises BindError if it cannot listen."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        try:
            self._listener = listen(self.options)
        except BaseException:
            self.epoll.close()
            os.close(self._wakeup)
            raise
        self._address = self._listener.getsockname()
        self.epoll.register(self._listener.fileno(), _IN)
        self.epoll.register(self._wakeup, _IN)
        self._thread = threading.Thread(target=self._run, name="railcar-epoll")
        self._thread.start()

    def stop(self, deadline: float = 5.0) -> None:
        """Stop accepting, flush and close every connection, abort what remains after ``deadline`` s."""
        if self._thread is None:
            return
        self.call_soon_threadsafe(lambda: self._begin_stop(deadline))
        self._thread.join()
        self._thread = None

    def call_soon_threadsafe(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` on the engine's thread, where Conn methods may be called."""
        self._calls.append(callback)
        os.eventfd_write(self._wakeup, 1)

    # -- called by connections ------------------------------------------------------------

    def lose(self, conn: _EpollConn, exc: BaseException) -> None:
        """Drop a connection whose socket failed."""
        conn._out.clear()
        conn._out_size = 0
        self.finish(conn, exc)

    def finish(self, conn: _EpollConn, exc: BaseException | None) -> None:
        """Unregister and close a connection now; its on_close runs at the end of this turn."""
        if conn._state == _CLOSED:
            return
        conn._state = _CLOSED
        if self._conns.pop(conn._fd, None) is not None:
            self.epoll.unregister(conn._fd)
        conn._sock.close()
        self._closed.append((conn, exc))

    def notify_writable(self, conn: _EpollConn) -> None:
        """Schedule on_writable for the end of this turn."""
        self._writable.append(conn)

    # -- the reactor ----------------------------------------------------------------------

    def _run(self) -> None:
        self._safe(self.handler.on_start, self)
        conns = self._conns
        on_data = self._on_data
        buffer = self._buffer
        view = memoryview(buffer)
        listen_fd = self._listener.fileno() if self._listener else -1
        poll = self.epoll.poll
        while not self._finished():
            for fd, events in poll(self._poll_timeout()):
                conn = conns.get(fd)
                if conn is None:
                    if fd == listen_fd:
                        self._accept()
                    elif fd == self._wakeup:
                        self._run_calls()
                    continue
                if events & _IN:
                    try:
                        received = conn._sock.recv_into(buffer)
                    except BlockingIOError:
                        received = -1
                    except OSError as exc:
                        self.lose(conn, exc)
                        continue
                    if received > 0:
                        try:
                            on_data(conn, view[:received])
                        except Exception as exc:  # noqa: BLE001 - a handler bug closes only its connection
                            report_handler_error(conn, exc)
                            conn.abort()
                            continue
                    elif received == 0:
                        self._eof(conn)
                        continue
                if events & _OUT and conn._out and conn._state != _CLOSED:
                    conn.flush()
                if events & _ERR and not events & (_IN | _OUT):
                    self.lose(conn, _socket_error(conn._sock))
            if self._closed or self._writable:
                self._deliver_events()
        self._teardown()

    def _poll_timeout(self) -> float:
        waits = []
        if self._stop_at is not None:
            waits.append(min(self._stop_at - time.monotonic(), _STOP_POLL))
        if self._accept_paused_until:
            waits.append(self._accept_paused_until - time.monotonic())
            if waits[-1] <= 0:
                self._resume_accepting()
        return max(0.0, min(waits)) if waits else -1

    def _finished(self) -> bool:
        return self._stop_at is not None and (
            not self._conns or time.monotonic() >= self._stop_at or self._abort_now
        )

    def _accept(self) -> None:
        listener = self._listener
        if listener is None:
            return
        for _ in range(_ACCEPTS_PER_TURN):
            try:
                sock, peer = listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("cannot accept (%s); pausing accepts for 100 ms", exc.strerror)
                    self.epoll.modify(listener.fileno(), 0)
                    self._accept_paused_until = time.monotonic() + 0.1
                return
            sock.setblocking(False)
            set_nodelay(sock, self.options.nodelay)
            conn = _EpollConn(self, sock, peer or "")
            self._conns[conn._fd] = conn
            self.epoll.register(conn._fd, _IN)
            self._safe_conn(conn, self.handler.on_open, conn)

    def _resume_accepting(self) -> None:
        self._accept_paused_until = 0.0
        if self._listener is not None:
            self.epoll.modify(self._listener.fileno(), _IN)

    def _eof(self, conn: _EpollConn) -> None:
        keep_open = self._safe_conn(conn, self.handler.on_eof, conn)
        if keep_open and not conn.closed:
            conn._eof = True
            conn._update_events()
        else:
            conn.close()

    def _deliver_events(self) -> None:
        while self._writable:
            writable, self._writable = self._writable, []
            for conn in writable:
                if not conn.closed:
                    self._safe_conn(conn, self.handler.on_writable, conn)
        while self._closed:
            closed, self._closed = self._closed, []
            for conn, exc in closed:
                self._safe(self.handler.on_close, conn, exc)

    def _run_calls(self) -> None:
        try:
            os.eventfd_read(self._wakeup)
        except BlockingIOError:
            return
        while self._calls:
            self._safe(self._calls.popleft())

    def _begin_stop(self, deadline: float) -> None:
        self._stop_at = time.monotonic() + deadline
        if self._listener is not None:
            self.epoll.unregister(self._listener.fileno())
            self._listener.close()
            self._listener = None
        for conn in list(self._conns.values()):
            conn.close()

    def _teardown(self) -> None:
        for conn in list(self._conns.values()):
            conn.abort()
        self._deliver_events()
        self._run_calls()
        self.epoll.close()
        os.close(self._wakeup)

    def _safe(self, callback: Callable[..., object], *args: object) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("callback %r failed", callback)

    def _safe_conn(self, conn: _EpollConn, callback: Callable[..., object], *args: object) -> object:
        try:
            return callback(*args)
        except Exception as exc:  # noqa: BLE001 - a handler bug closes only its connection
            report_handler_error(conn, exc)
            conn.abort()
            return None


def _socket_error(sock: socket.socket) -> OSError:
    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if code:
        return OSError(code, os.strerror(code))
    return ConnectionResetError(errno.ECONNRESET, "connection hung up")
