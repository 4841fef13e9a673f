"""The asyncio and uvloop engines' datagram servers: one UDP socket served from a loop thread.

Each engine takes its loop's fastest path.  On uvloop the endpoint is a
DatagramProtocol: libuv reads up to 32 datagrams per readiness event in C, into a
64 KiB buffer (larger than any UDP payload, so a datagram over ``max_datagram``
arrives whole and is counted and dropped, never cut short), and the transport
queues what the kernel refuses; once ``send_queue`` bytes are queued, further
datagrams are dropped and counted.  The stdlib selector loop's datagram transport
reads one datagram per ``select`` (25,700 instructions per echoed datagram,
callgrind), so there the socket is served like on epoll, by ``SocketEndpoint``
through ``add_reader``/``add_writer``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from functools import partial
from typing import Protocol, cast

from railcar.engine._datagrams import CountingEndpoint
from railcar.engine._loop_thread import LoopThread, UvloopLoop
from railcar.engine._socket_datagrams import SocketEndpoint
from railcar.engine.api import (
    Address,
    Buffer,
    DatagramEndpoint,
    DatagramHandler,
    DatagramOptions,
    DatagramServer,
)
from railcar.engine.listen import bind_datagram

log = logging.getLogger("railcar.engine.asyncio")


class _Transport(Protocol):
    """What both loops' datagram transports offer (typeshed leaves the buffer size out)."""

    def sendto(self, data: bytes, addr: Address) -> None: ...
    def get_write_buffer_size(self) -> int: ...
    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class _ProtocolEndpoint(CountingEndpoint, asyncio.DatagramProtocol):
    """An endpoint that is its own datagram protocol, so each datagram costs one Python call."""

    __slots__ = ("_empty_sender", "_full", "_limit", "_transport", "closed_event")

    def __init__(self, server: AsyncioDatagramServer, local: Address) -> None:
        CountingEndpoint.__init__(self, local, server.stats, server.handler, server.options)
        self._limit = server.options.send_queue
        # Set by pause_writing once the transport holds more than send_queue bytes: a flag
        # read per send instead of a get_write_buffer_size() call.
        self._full = False
        self._transport: _Transport | None = None
        self._empty_sender: socket.socket | None = None
        self.closed_event = asyncio.Event()

    # -- asyncio.DatagramProtocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport; it pauses us past ``send_queue`` queued bytes and resumes at or below it."""
        self._transport = cast(_Transport, transport)
        self._transport.set_write_buffer_limits(self._limit, self._limit)

    def pause_writing(self) -> None:
        """The transport holds more than ``send_queue`` bytes: drop until it drains."""
        self._full = True

    def resume_writing(self) -> None:
        """The transport is back at or below ``send_queue`` bytes."""
        self._full = False

    def datagram_received(self, data: bytes, addr: Address) -> None:
        """Deliver one datagram (or count and drop it if oversized)."""
        if len(data) > self._max:
            self.oversized(addr)
            return
        self.stats.received += 1
        try:
            self._on_datagram(self, addr, data)
        except Exception as exc:  # noqa: BLE001 - a handler bug loses only its datagram
            self.handler_failed(addr, exc)

    def error_received(self, exc: Exception) -> None:
        """An ICMP error queued on the socket: a datagram sent earlier did not arrive."""
        log.debug("datagram socket error: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        """The transport is closed."""
        self._closed = True
        if self._empty_sender is not None:
            self._empty_sender.close()
        self.closed_event.set()

    # -- DatagramEndpoint ---------------------------------------------------------------------

    def send_to(self, addr: Address, data: Buffer) -> bool:
        """Send one datagram to ``addr``; False if dropped (send queue full, or the kernel refused it).

        Raises ConnectionClosed once the server stopped, ValueError over ``max_datagram``.
        """
        size = data.nbytes if type(data) is memoryview else len(data)
        if self._closed or size > self._max:
            self.refuse_outgoing(size)
        if self._full:
            return self.dropped(addr)
        if not data:
            return self._send_empty(addr)
        # The transport may keep what it cannot send yet: copy anything mutable.
        try:
            self._transport.sendto(data if type(data) is bytes else bytes(data), addr)  # type: ignore[union-attr]
        except OSError as exc:
            return self.refused(addr, exc)
        self.stats.sent += 1
        return True

    def _send_empty(self, addr: Address) -> bool:
        # The transport silently ignores an empty datagram (a valid UDP datagram), so it
        # goes out through a duplicate of the socket, unless datagrams are queued ahead
        # of it: sending it first would reorder them, so it is dropped and counted.
        if self.send_queue_size:
            return self.dropped(addr)
        sender = self._empty_sender
        if sender is None:
            transport = cast(asyncio.BaseTransport, self._transport)
            original = transport.get_extra_info("socket")
            sender = self._empty_sender = socket.socket(fileno=os.dup(original.fileno()))
        try:
            sender.sendto(b"", addr)
        except OSError as exc:  # EAGAIN included: nothing is queued for it to wait behind
            return self.refused(addr, exc)
        self.stats.sent += 1
        return True

    @property
    def send_queue_size(self) -> int:
        """Bytes of datagrams accepted by ``send_to`` that the kernel has not taken yet."""
        return 0 if self._transport is None else self._transport.get_write_buffer_size()

    def stop(self) -> None:
        """Refuse further sends and stop receiving; the transport sends what it holds, then closes."""
        self._closed = True
        if self._transport is not None:
            self._transport.close()


class _ReaderEndpoint(SocketEndpoint):
    """The socket served through the selector loop's ``add_reader``/``add_writer``."""

    __slots__ = ("_loop",)

    def __init__(
        self, server: AsyncioDatagramServer, sock: socket.socket, loop: asyncio.AbstractEventLoop
    ) -> None:
        super().__init__(sock, server.stats, server.handler, server.options)
        self._loop = loop
        loop.add_reader(sock, self.receive)

    def _want_writable(self, wanted: bool) -> None:
        if wanted:
            self._loop.add_writer(self._sock, self.flush)
        else:
            self._loop.remove_writer(self._sock)

    def stop_receiving(self) -> None:
        """Stop reading: a stopping server only drains its queue."""
        self._loop.remove_reader(self._sock)

    def close(self) -> None:
        """Refuse further sends, drop what is queued and close the socket."""
        super().close()
        self._loop.remove_writer(self._sock)
        self._sock.close()


class AsyncioDatagramServer(LoopThread, DatagramServer):
    """Runs an asyncio event loop on a background thread and serves one UDP socket from it."""

    engine = "asyncio"
    has_loop = True

    def __init__(self, handler: DatagramHandler, options: DatagramOptions) -> None:
        super().__init__(handler, options)
        self._endpoint: CountingEndpoint | None = None

    @property
    def endpoint(self) -> DatagramEndpoint:
        """The endpoint handlers send with; raises RuntimeError while the server is not running."""
        if self._endpoint is None or self._thread is None:
            raise RuntimeError("server is not running")
        return self._endpoint

    def call_soon_threadsafe(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` on the engine's thread; raises RuntimeError if not running."""
        loop = self._loop
        if loop is None or self._thread is None:
            raise RuntimeError("server is not running")
        loop.call_soon_threadsafe(callback)

    def _start(self) -> None:
        sock = bind_datagram(self.options)
        self._address = sock.getsockname()
        on_start = partial(self.handler.on_start, self)
        self._start_loop(sock, f"railcar-{self.engine}-udp", partial(self._serve, sock), on_start)

    async def _serve(self, sock: socket.socket) -> None:
        self._endpoint = await self._open(asyncio.get_running_loop(), sock)

    async def _open(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> CountingEndpoint:
        """Start serving ``sock`` on the running loop and return its endpoint."""
        return _ReaderEndpoint(self, sock, loop)

    def _stop(self, deadline: float) -> None:
        assert self._thread is not None
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._shutdown(deadline), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._thread = None
        self._loop = None
        self._endpoint = None

    async def _shutdown(self, deadline: float) -> None:
        """Stop receiving, give the send queue ``deadline`` seconds to drain, close."""
        endpoint = self._endpoint
        assert isinstance(endpoint, _ReaderEndpoint)
        endpoint.stop_receiving()
        loop = asyncio.get_running_loop()
        give_up = loop.time() + deadline
        while endpoint.send_queue_size and loop.time() < give_up and not self._abort_now:
            await asyncio.sleep(0.005)
        endpoint.close()


class UvloopDatagramServer(UvloopLoop, AsyncioDatagramServer):
    """The datagram server on uvloop, through its datagram transport (libuv reads in batches)."""

    engine = "uvloop"

    async def _open(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> CountingEndpoint:
        """Serve ``sock`` through a datagram transport and return the protocol, which is the endpoint."""
        endpoint = _ProtocolEndpoint(self, self._address or ())
        await loop.create_datagram_endpoint(lambda: endpoint, sock=sock)
        return endpoint

    async def _shutdown(self, deadline: float) -> None:
        """Stop receiving, let the transport send what it holds within ``deadline`` s, close."""
        endpoint = self._endpoint
        assert isinstance(endpoint, _ProtocolEndpoint)
        endpoint.stop()  # closes once the queue has drained
        loop = asyncio.get_running_loop()
        give_up = loop.time() + deadline
        while not endpoint.closed_event.is_set() and loop.time() < give_up and not self._abort_now:
            await asyncio.sleep(0.005)
        if not endpoint.closed_event.is_set() and endpoint._transport is not None:
            endpoint._transport.abort()
            await endpoint.closed_event.wait()
