"""The asyncio and uvloop engines: one protocol per connection, reading into a shared buffer or as bytes."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from functools import partial
from typing import cast

from railcar.engine._failures import call_guarded, call_on_close, handler_failed
from railcar.engine._loop_thread import LoopThread, UvloopLoop
from railcar.engine.api import Buffer, Conn, Handler, Server, ServerOptions, data_callback
from railcar.engine.listen import listen, set_nodelay
from railcar.errors import ConnectionClosed

log = logging.getLogger("railcar.engine.asyncio")


class _ProtocolConn(Conn, asyncio.BufferedProtocol):
    """A connection that is its own asyncio protocol, so each read costs one Python call."""

    __slots__ = ("_closed", "_handler", "_held", "_on_data", "_server", "_transport", "_view")

    def __init__(self, server: AsyncioServer) -> None:
        Conn.__init__(self, (), ())
        self._server = server
        self._handler = server.handler
        self._on_data = server.on_data
        self._view = server.read_view
        self._closed = True  # until connection_made: one flag guards every write
        self._transport: asyncio.Transport | None = None
        self._held: bytearray | None = None

    # -- asyncio.BufferedProtocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register the connection and tell the handler."""
        self._server.opening -= 1
        self._transport = tcp = cast(asyncio.Transport, transport)
        self._closed = False
        options = self._server.options
        sock = tcp.get_extra_info("socket")
        if sock is not None:
            set_nodelay(cast(socket.socket, sock), options.nodelay)
        self.peer = tcp.get_extra_info("peername") or ()
        self.local = tcp.get_extra_info("sockname") or ()
        tcp.set_write_buffer_limits(options.high_water, options.low_water)
        self._server.conns.add(self)
        call_guarded(self, self._handler.on_open, self)
        if self._closed:
            return
        if self._server.stopping:
            # Accepted before the listener closed, made after stop() closed the others.
            self.close()
            return
        if not self.reading:
            # uvloop starts reading once connection_made returns, undoing a pause made in
            # on_open: hold what arrives until the handler resumes.
            self._held = bytearray()
            self._on_data = self._hold

    def get_buffer(self, sizehint: int) -> memoryview:
        """Offer the server's shared read buffer: idle connections hold none of their own."""
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        """Deliver what was just read."""
        try:
            self._on_data(self, self._view[:nbytes])
        except Exception as exc:  # noqa: BLE001 - a handler bug closes only its connection
            handler_failed(self, exc)

    def eof_received(self) -> bool:
        """Ask the handler whether to keep the write side open after the peer's EOF."""
        return bool(call_guarded(self, self._handler.on_eof, self))

    def pause_writing(self) -> None:
        """Output crossed the high-water mark: stop reading until it drains."""
        self._set_write_paused(True)

    def resume_writing(self) -> None:
        """Output drained below the low-water mark: read again and tell the handler."""
        self._set_write_paused(False)
        if not self._closed:
            call_guarded(self, self._handler.on_writable, self)

    def connection_lost(self, exc: Exception | None) -> None:
        """Unregister the connection and tell the handler why it ended."""
        self._closed = True
        self._server.conns.discard(self)
        call_on_close(self._handler, self, exc)

    # -- Conn ---------------------------------------------------------------------------------

    def write(self, data: Buffer) -> None:
        """Queue bytes for sending; raises ConnectionClosed if the connection is closed."""
        if self._closed:
            raise ConnectionClosed(f"connection {self.peer} is closed")
        # Transports may keep a reference to what they could not send yet; the read
        # buffer is shared and reused, so anything that is not immutable is copied.
        self._transport.write(data if type(data) is bytes else bytes(data))  # type: ignore[union-attr]

    def writelines(self, chunks: Iterable[Buffer]) -> None:
        """Queue several buffers, sent with one system call where possible; raises ConnectionClosed."""
        if self._closed:
            raise ConnectionClosed(f"connection {self.peer} is closed")
        self._transport.writelines([c if type(c) is bytes else bytes(c) for c in chunks])  # type: ignore[union-attr]

    def close(self) -> None:
        """Close after the queued output has been sent; a no-op if already closing."""
        if not self._closed and self._transport is not None:
            self._closed = True
            self._transport.close()

    def abort(self) -> None:
        """Close at once, discarding queued output."""
        self._closed = True
        if self._transport is not None:
            self._transport.abort()

    def fileno(self) -> int:
        """The socket's file descriptor, for socket options; never read or write it directly."""
        sock = None if self._transport is None else self._transport.get_extra_info("socket")
        if sock is None:
            raise ConnectionClosed(f"connection {self.peer} is closed")
        return int(sock.fileno())

    @property
    def write_buffer_size(self) -> int:
        """Bytes accepted by ``write`` that the kernel has not taken yet."""
        return 0 if self._transport is None else self._transport.get_write_buffer_size()

    @property
    def closed(self) -> bool:
        """True once ``close``/``abort`` was called or the connection was lost."""
        return self._closed

    def _apply_reading(self) -> None:
        if self._closed or self._transport is None:
            return
        if not self.reading:
            self._transport.pause_reading()
            return
        if self._held is not None:
            held, self._held = self._held, None
            self._on_data = self._server.on_data
            if held:
                asyncio.get_running_loop().call_soon(self._deliver_held, held)
                return
        self._transport.resume_reading()

    def _hold(self, conn: Conn, data: memoryview) -> None:
        assert self._held is not None
        self._held += data
        self._transport.pause_reading()  # type: ignore[union-attr]

    def _deliver_held(self, held: bytearray) -> None:
        if self._closed:
            return
        try:
            self._on_data(self, memoryview(held))
        except Exception as exc:  # noqa: BLE001 - a handler bug closes only its connection
            handler_failed(self, exc)
            return
        self._apply_reading()


class _BytesConn(_ProtocolConn, asyncio.Protocol):
    """A connection whose handler takes bytes, on uvloop's plain Protocol path.

    uvloop makes each read's bytes in C and calls ``data_received`` once; its buffered path
    calls two Python methods per read (``get_buffer``, ``buffer_updated``) and the view
    handed on is one more object: together about half the server's own work per echo.
    """

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        """Deliver what was just read."""
        try:
            self._on_data(self, data)  # type: ignore[arg-type]  # the handler takes bytes
        except Exception as exc:  # noqa: BLE001 - a handler bug closes only its connection
            handler_failed(self, exc)


class AsyncioServer(LoopThread, Server):
    """Runs an asyncio event loop on a background thread and serves the handler from it."""

    engine = "asyncio"
    has_loop = True
    #: The stdlib loop reads into a new bytes object of the full read size per read: the
    #: buffered protocol's shared buffer is cheaper there, whatever the handler takes.
    conn_class: type[_ProtocolConn] = _ProtocolConn

    def __init__(self, handler: Handler, options: ServerOptions) -> None:
        super().__init__(handler, options)
        self.conns: set[_ProtocolConn] = set()
        self.on_data = data_callback(handler, options)
        self.read_view = memoryview(bytearray(options.read_buffer))
        # Protocols made for accepted or adopted sockets whose connection_made has not run yet:
        # stop() waits for them, since nothing else could close them once the loop is gone.
        self.opening = 0
        self.stopping = False
        self._server: asyncio.Server | None = None
        # adopt() from any thread queues onto the loop only while this is set; stop() clears it
        # before it stops the loop, so every adoption queued is run (and closed, if late).
        self._adopting = threading.Lock()
        self._accepts_adoptions = False
        self._adoptions: set[asyncio.Task[object]] = set()

    @property
    def active_connections(self) -> int:
        """Number of open connections."""
        return len(self.conns)

    def _start(self) -> None:
        sock = listen(self.options)
        self._address = sock.getsockname()
        self.stopping = False
        on_start = partial(self.handler.on_start, self)
        self._start_loop(sock, f"railcar-{self.engine}", partial(self._listen, sock), on_start)
        with self._adopting:
            self._accepts_adoptions = True

    async def _listen(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._new_conn, sock=sock, backlog=self.options.backlog)

    def _new_conn(self) -> _ProtocolConn:
        self.opening += 1
        return self.conn_class(self)

    def _adopt(self, sock: socket.socket) -> None:
        with self._adopting:
            if not self._accepts_adoptions or self._loop is None:
                raise RuntimeError("server is not running")
            self._loop.call_soon_threadsafe(self._adopt_now, sock)

    def _adopt_now(self, sock: socket.socket) -> None:
        if self.stopping:
            sock.close()  # adopted while stopping: closed at once, like a connection accepted then
            return
        loop = asyncio.get_running_loop()
        conn = self._new_conn()
        task = loop.create_task(loop.connect_accepted_socket(lambda: conn, sock))
        self._adoptions.add(task)
        task.add_done_callback(partial(self._adopted, conn, sock))

    def _adopted(self, conn: _ProtocolConn, sock: socket.socket, task: asyncio.Task[object]) -> None:
        self._adoptions.discard(task)
        if conn._transport is None:  # never reached connection_made: nobody else will close it
            self.opening -= 1
            error = None if task.cancelled() else task.exception()
            log.warning("cannot serve an adopted socket (%s); closing it", error)
            sock.close()

    def _stop(self, deadline: float) -> None:
        assert self._thread is not None
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._shutdown(deadline), self._loop).result()
        with self._adopting:
            self._accepts_adoptions = False
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._thread = None
        self._loop = None

    async def _shutdown(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        self.stopping = True
        if self._server is not None:
            await self._close_listener(self._server)
        for conn in list(self.conns):
            conn.close()
        give_up = loop.time() + deadline
        # Connections accepted before the listener closed may reach connection_made only now;
        # it sees ``stopping`` and closes them.
        while (self.conns or self.opening) and loop.time() < give_up and not self._abort_now:
            await asyncio.sleep(0.005)
        while self.conns:  # connection_lost runs on the next loop iterations
            for conn in list(self.conns):  # each turn: one made after the deadline only closed itself
                conn.abort()
            await asyncio.sleep(0)
        await self._stopped(deadline)

    async def _stopped(self, deadline: float) -> None:
        """Tell the handler the run is over and await its clean-up, within ``deadline`` s."""
        try:
            cleanup = self.handler.on_stop(self)
            if cleanup is not None:
                await asyncio.wait_for(cleanup, deadline)
        except TimeoutError:
            log.warning("handler's on_stop clean-up did not finish within %.1f s; cancelled", deadline)
        except Exception:
            log.exception("handler's on_stop failed")

    async def _close_listener(self, server: asyncio.Server) -> None:
        # The selector loop accepts in a reader callback but builds the transport in a task one
        # turn later; if Server.close() comes in between, that task fails (Server._attach asserts
        # the server is open, CPython gh-109564) and drops the accepted socket unclosed. So stop
        # the reader first, let the accepts already taken build their transports, then close.
        loop = asyncio.get_running_loop()
        for sock in server.sockets:
            loop.remove_reader(sock.fileno())
        await asyncio.sleep(0)
        server.close()

    def call_soon_threadsafe(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` on the engine's thread (for Conn methods); raises RuntimeError if not running."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("server is not running")
        loop.call_soon_threadsafe(callback)  # raises RuntimeError too if the loop closed meanwhile


class UvloopServer(UvloopLoop, AsyncioServer):
    """The asyncio engine on uvloop's libuv-based event loop."""

    engine = "uvloop"

    def __init__(self, handler: Handler, options: ServerOptions) -> None:
        super().__init__(handler, options)
        # A buffered handler's engine callback copies each read into the connection's inbound
        # buffer, so it too takes bytes.
        if handler.takes_bytes or handler.buffered:
            self.conn_class = _BytesConn

    async def _close_listener(self, server: asyncio.Server) -> None:
        # uvloop makes the protocol and transport in the accept callback itself: nothing is in
        # flight, and its listener is no reader to remove.
        server.close()
