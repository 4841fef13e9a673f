"""The epoll engine: a single-threaded reactor on ``select.epoll`` with non-blocking sockets.

Level-triggered readiness events; one ``recv_into`` a shared buffer per readable
connection per turn (fair to every connection); writes go straight to the socket
and only what the kernel refuses is queued, flushed with ``sendmsg`` on EPOLLOUT.
Everything else a reactor needs (calls from other threads, deferred events, the
stop deadline, accept pauses, the output queue) comes from the shared core.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import threading
from collections.abc import Iterable
from functools import partial

from railcar.engine._failures import call_guarded, call_logged, handler_failed
from railcar.engine._output import IOV_MAX, OutputQueue, unsent
from railcar.engine._reactor import ReactorCore, ReactorServer
from railcar.engine.api import Buffer, Conn, Handler, ServerOptions
from railcar.engine.listen import set_nodelay
from railcar.errors import ConnectionClosed

log = logging.getLogger("railcar.engine.epoll")

_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_ERR = select.EPOLLERR | select.EPOLLHUP
_ACCEPTS_PER_TURN = 256  # keep accept storms from starving established connections
_OPEN, _CLOSING, _CLOSED = 0, 1, 2


class _EpollConn(Conn):
    __slots__ = ("_eof", "_events", "_fd", "_out", "_reactor", "_sock", "_state")

    def __init__(self, reactor: _Reactor, sock: socket.socket, peer: tuple[object, ...] | str):
        super().__init__(peer, sock.getsockname())
        self._reactor = reactor
        self._sock = sock
        self._fd = sock.fileno()
        self._out = OutputQueue()
        self._state = _OPEN
        self._events = _IN
        self._eof = False

    # -- output -----------------------------------------------------------------------------

    def write(self, data: Buffer) -> None:
        """Send bytes now, queueing what the kernel does not take; raises ConnectionClosed."""
        if self._state != _OPEN:
            raise ConnectionClosed(f"connection {self.peer} is closed")
        if self._out.size:
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
        if not self._out.size:
            try:
                sent = self._sock.sendmsg(pending[:IOV_MAX]) if pending else 0
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self._reactor.lose(self, exc)
                return
            pending = unsent(pending, sent)
        for chunk in pending:
            self._enqueue(bytes(chunk))

    def _enqueue(self, data: bytes | memoryview) -> None:
        out = self._out
        was_empty = not out.size
        out.append(data)
        if was_empty and out.size:
            self._update_events()
        if out.size > self._reactor.options.high_water:
            self._set_write_paused(True)

    def flush(self) -> None:
        """Send queued output now that the socket is writable."""
        out = self._out
        try:
            sent = self._sock.sendmsg(out.batch())
        except BlockingIOError:
            return
        except OSError as exc:
            self._reactor.lose(self, exc)
            return
        out.consume(sent)
        if not out.size:
            if self._state == _CLOSING:
                self._reactor.finish(self, None)
                return
            self._update_events()
        if self._write_paused and out.size <= self._reactor.options.low_water:
            self._set_write_paused(False)
            self._reactor.core.events.writable.append(self)

    # -- life cycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close after the queued output has been sent; a no-op if already closing."""
        if self._state != _OPEN:
            return
        if self._out.size:
            self._state = _CLOSING
            self._update_events()
        else:
            self._reactor.finish(self, None)

    def abort(self) -> None:
        """Close at once, discarding queued output."""
        if self._state != _CLOSED:
            self._out.clear()
            self._reactor.finish(self, None)

    def fileno(self) -> int:
        """The socket's file descriptor, for socket options; never read or write it directly."""
        return self._fd

    @property
    def write_buffer_size(self) -> int:
        """Bytes accepted by ``write`` that the kernel has not taken yet."""
        return self._out.size

    @property
    def closed(self) -> bool:
        """True once ``close``/``abort`` was called or the connection was lost."""
        return self._state != _OPEN

    def _apply_reading(self) -> None:
        self._update_events()

    def _update_events(self) -> None:
        if self._state == _CLOSED:
            return
        wanted = _OUT if self._out.size else 0
        if self._state == _OPEN and not self._eof and self.reading:
            wanted |= _IN
        if wanted != self._events:
            self._events = wanted
            self._reactor.epoll.modify(self._fd, wanted)


class _Reactor:
    """One run of an epoll server, from start to stop: its listener, epoll object, core and thread.

    Each start makes a new one, so a stopped server restarts with nothing of the last run.
    """

    def __init__(self, server: EpollServer, listener: socket.socket) -> None:
        self.server = server
        self.handler = server.handler
        self.options = server.options
        self.conns: dict[int, _EpollConn] = {}
        self.listener: socket.socket | None = listener
        self.core = ReactorCore(server.handler)
        try:
            self.epoll = select.epoll()
        except BaseException:
            self.core.close()
            raise
        self.epoll.register(listener.fileno(), _IN)
        self.epoll.register(self.core.calls.fileno(), _IN)
        self.thread = threading.Thread(target=self._run, name="railcar-epoll")

    def stop(self, deadline: float) -> None:
        """Stop accepting and wait for the reactor thread to close every connection."""
        self.core.calls.put(lambda: self._begin_stop(deadline))
        self.thread.join()

    def adopt(self, sock: socket.socket) -> None:
        """Open a connection on ``sock`` on the reactor thread; raises RuntimeError once the run ended."""
        self.core.calls.put(lambda: self._adopt_now(sock))

    # -- called by connections ------------------------------------------------------------

    def lose(self, conn: _EpollConn, exc: BaseException) -> None:
        """Drop a connection whose socket failed."""
        conn._out.clear()
        self.finish(conn, exc)

    def finish(self, conn: _EpollConn, exc: BaseException | None) -> None:
        """Unregister and close a connection now; its on_close runs at the end of this turn."""
        if conn._state == _CLOSED:
            return
        conn._state = _CLOSED
        if self.conns.pop(conn._fd, None) is not None:
            self.epoll.unregister(conn._fd)
        conn._sock.close()
        self.core.events.closed.append((conn, exc))

    # -- the loop -------------------------------------------------------------------------

    def _run(self) -> None:
        server = self.server
        call_logged(partial(self.handler.on_start, server))
        core = self.core
        stop = core.stop
        accepts = core.accepts
        events_due = core.events
        conns = self.conns
        on_data = server.on_data
        buffer = server.read_buffer
        view = memoryview(buffer)
        listen_fd = self.listener.fileno() if self.listener else -1
        calls_fd = core.calls.fileno()
        poll = self.epoll.poll
        try:
            while stop.at is None or not stop.finished(len(conns), server.abort_requested):
                if accepts.due():
                    self._resume_accepting()
                timeout = core.timeout()
                for fd, events in poll(-1 if timeout is None else timeout):
                    conn = conns.get(fd)
                    if conn is None:
                        if fd == listen_fd:
                            self._accept()
                        elif fd == calls_fd:
                            core.calls.run()
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
                                handler_failed(conn, exc)
                                continue
                        elif received == 0:
                            self._eof(conn)
                            continue
                    if events & _OUT and conn._out.size and conn._state != _CLOSED:
                        conn.flush()
                    if events & _ERR and not events & (_IN | _OUT):
                        self.lose(conn, _socket_error(conn._sock))
                if events_due.closed or events_due.writable:
                    events_due.deliver()
            call_logged(partial(self.handler.on_stop, server))
        finally:
            self._teardown()

    def _accept(self) -> None:
        listener = self.listener
        if listener is None:
            return
        for _ in range(_ACCEPTS_PER_TURN):
            try:
                sock, peer = listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if self.core.accepts.pause_for(exc):
                    self.epoll.modify(listener.fileno(), 0)
                return
            self._open(sock, peer)

    def _adopt_now(self, sock: socket.socket) -> None:
        peer = self.core.adopted_peer(sock)
        if peer is not None:
            self._open(sock, peer)

    def _open(self, sock: socket.socket, peer: tuple[object, ...] | str) -> None:
        sock.setblocking(False)
        set_nodelay(sock, self.options.nodelay)
        conn = _EpollConn(self, sock, peer or "")
        self.conns[conn._fd] = conn
        self.epoll.register(conn._fd, _IN)
        call_guarded(conn, self.handler.on_open, conn)

    def _resume_accepting(self) -> None:
        self.core.accepts.resume()
        if self.listener is not None:
            self.epoll.modify(self.listener.fileno(), _IN)

    def _eof(self, conn: _EpollConn) -> None:
        keep_open = call_guarded(conn, self.handler.on_eof, conn)
        if keep_open and not conn.closed:
            conn._eof = True
            conn._update_events()
        else:
            conn.close()

    def _begin_stop(self, deadline: float) -> None:
        self.core.stop.begin(deadline)
        if self.listener is not None:
            self.epoll.unregister(self.listener.fileno())
            self.listener.close()
            self.listener = None
        for conn in list(self.conns.values()):
            conn.close()

    def _teardown(self) -> None:
        for conn in list(self.conns.values()):
            conn.abort()
        self.core.close()
        self.epoll.close()


class EpollServer(ReactorServer):
    """A reactor thread multiplexing every connection with epoll, on the shared reactor core."""

    engine = "epoll"

    def __init__(self, handler: Handler, options: ServerOptions) -> None:
        super().__init__(handler, options)
        self.read_buffer = bytearray(options.read_buffer)

    def _new_run(self, listener: socket.socket) -> _Reactor:
        return _Reactor(self, listener)


def _socket_error(sock: socket.socket) -> OSError:
    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if code:
        return OSError(code, os.strerror(code))
    return ConnectionResetError(errno.ECONNRESET, "connection hung up")
