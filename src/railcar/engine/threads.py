"""The threads engine: one thread per connection with blocking sockets (the baseline design).

Writes are ``sendall`` calls made by the writing thread, so backpressure is the
kernel's socket buffer: a writer to a peer that does not read blocks, and the
connection's reader thread stops reading with it.  Conn methods are thread-safe.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial

from railcar.engine._failures import call_logged, call_on_close, handler_failed
from railcar.engine._reactor import AcceptPause, Wakeup
from railcar.engine.api import Buffer, Conn, Handler, Server, ServerOptions, data_callback
from railcar.engine.listen import listen, set_nodelay
from railcar.errors import ConnectionClosed

_THREAD_READ_BUFFER = 64 * 1024
_LINGER_RESET = struct.pack("ii", 1, 0)


class _ThreadConn(Conn):
    __slots__ = ("_closing", "_done", "_io_error", "_lock", "_readable", "_sock")

    def __init__(self, sock: socket.socket, peer: tuple[object, ...] | str) -> None:
        super().__init__(peer, sock.getsockname())
        self._sock = sock
        self._lock = threading.Lock()
        self._readable = threading.Event()
        self._readable.set()
        self._done = threading.Event()
        self._closing = False
        self._io_error: OSError | None = None

    def write(self, data: Buffer) -> None:
        """Send bytes, blocking while the peer's window is full; raises ConnectionClosed."""
        if self._closing:
            raise ConnectionClosed(f"connection {self.peer} is closed")
        with self._lock:
            try:
                self._sock.sendall(data)
            except OSError as exc:
                self._lose(exc)

    def writelines(self, chunks: Iterable[Buffer]) -> None:
        """Send several buffers as one write; raises ConnectionClosed."""
        self.write(b"".join(chunks))

    def close(self) -> None:
        """Stop reading and close once a write in progress has finished; no-op if closing."""
        if not self._closing:
            self._closing = True
            self._shutdown(socket.SHUT_RD)

    def abort(self) -> None:
        """Close at once with a reset, failing a write in progress."""
        self._closing = True
        with contextlib.suppress(OSError):
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        self._shutdown(socket.SHUT_RDWR)

    def fileno(self) -> int:
        """The socket's file descriptor, for socket options; never read or write it directly."""
        return self._sock.fileno()

    @property
    def write_buffer_size(self) -> int:
        """Always 0: writes block until the kernel has taken every byte."""
        return 0

    @property
    def closed(self) -> bool:
        """True once ``close``/``abort`` was called or the connection was lost."""
        return self._closing

    def _apply_reading(self) -> None:
        if self.reading:
            self._readable.set()
        else:
            self._readable.clear()

    def _lose(self, exc: OSError) -> None:
        if self._io_error is None and not self._closing:
            self._io_error = exc
        self._closing = True
        self._shutdown(socket.SHUT_RDWR)

    def _shutdown(self, how: int) -> None:
        # Wakes the reader thread (recv returns) and any paused wait.
        with contextlib.suppress(OSError):
            self._sock.shutdown(how)
        self._readable.set()
        self._done.set()


class ThreadsServer(Server):
    """An acceptor thread plus one thread per connection."""

    engine = "threads"

    def __init__(self, handler: Handler, options: ServerOptions) -> None:
        super().__init__(handler, options)
        self._on_data = data_callback(handler, options)
        self._conns: dict[_ThreadConn, threading.Thread] = {}
        # Guards _conns and _stopping together: a connection is registered (accepted or
        # adopted) only while not stopping, so stop() sees every connection it must close.
        self._conns_lock = threading.Lock()
        self._acceptor: threading.Thread | None = None
        self._wakeup: Wakeup | None = None
        self._stopping = True

    @property
    def active_connections(self) -> int:
        """Number of open connections."""
        return len(self._conns)

    def _start(self) -> None:
        listener = listen(self.options)
        self._address = listener.getsockname()
        self._wakeup = Wakeup()
        self._stopping = False
        self._acceptor = threading.Thread(
            target=self._accept_loop, args=(listener, self._wakeup), name="railcar-threads-accept"
        )
        self._acceptor.start()

    def _stop(self, deadline: float) -> None:
        """Stop accepting, close every connection, reset what remains after ``deadline`` s."""
        assert self._acceptor is not None
        assert self._wakeup is not None
        with self._conns_lock:
            self._stopping = True
            conns = dict(self._conns)
        self._wakeup.set()
        self._acceptor.join()
        self._wakeup.close()
        self._acceptor = self._wakeup = None
        for conn in conns:
            conn.close()
        give_up = time.monotonic() + deadline
        for thread in conns.values():
            # in short joins, to notice abort_stop()
            while thread.is_alive() and not self._abort_now and (left := give_up - time.monotonic()) > 0:
                thread.join(min(left, 0.05))
        for conn, thread in conns.items():
            if thread.is_alive():
                conn.abort()
                thread.join()
        call_logged(partial(self.handler.on_stop, self))

    def _adopt(self, sock: socket.socket) -> None:
        self._open(sock, sock.getpeername())

    def call_soon_threadsafe(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` now in the calling thread: this engine's Conn methods are thread-safe."""
        callback()

    def _accept_loop(self, listener: socket.socket, wakeup: Wakeup) -> None:
        call_logged(partial(self.handler.on_start, self))
        pause = AcceptPause()
        poller = select.poll()
        poller.register(wakeup.fileno(), select.POLLIN)
        poller.register(listener.fileno(), select.POLLIN)
        try:
            while not self._stopping:
                timeout = pause.timeout()
                poller.poll(None if timeout is None else max(0.0, timeout) * 1000)
                if pause.due():
                    pause.resume()
                    poller.register(listener.fileno(), select.POLLIN)
                while not self._stopping and not pause.paused:
                    try:
                        sock, peer = listener.accept()
                    except BlockingIOError:
                        break
                    except OSError as exc:
                        if pause.pause_for(exc):
                            poller.unregister(listener.fileno())
                        break
                    self._open(sock, peer)
        finally:
            listener.close()

    def _open(self, sock: socket.socket, peer: tuple[object, ...] | str) -> None:
        sock.setblocking(True)
        set_nodelay(sock, self.options.nodelay)
        conn = _ThreadConn(sock, peer or "")
        thread = threading.Thread(target=self._serve, args=(conn,), name=f"railcar-conn-{peer}", daemon=True)
        with self._conns_lock:
            if self._stopping:
                sock.close()  # accepted or adopted while stopping: closed at once
                return
            self._conns[conn] = thread
        thread.start()

    def _serve(self, conn: _ThreadConn) -> None:
        handler = self.handler
        on_data = self._on_data
        sock = conn._sock
        buffer = bytearray(min(self.options.read_buffer, _THREAD_READ_BUFFER))
        view = memoryview(buffer)
        try:
            handler.on_open(conn)
            while not conn.closed:
                conn._readable.wait()
                if conn.closed:
                    break
                try:
                    received = sock.recv_into(buffer)
                except OSError as exc:
                    conn._lose(exc)
                    break
                if received:
                    on_data(conn, view[:received])
                elif handler.on_eof(conn) and not conn.closed:
                    conn._done.wait()
                else:
                    conn.close()
        except Exception as exc:  # noqa: BLE001 - a handler bug closes only its connection
            # stop() may abort a connection while its handler writes (this thread runs on):
            # the ConnectionClosed that write raises then is the stop, not a handler bug.
            if self._stopping and isinstance(exc, ConnectionClosed):
                conn.abort()
            else:
                handler_failed(conn, exc)
        finally:
            conn._closing = True
            with conn._lock:
                sock.close()
            with self._conns_lock:
                self._conns.pop(conn, None)
            call_on_close(handler, conn, conn._io_error)
