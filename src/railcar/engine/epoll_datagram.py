"""The epoll engine's datagram server: one non-blocking UDP socket on its own reactor thread.

Per readiness event the loop reads datagrams with ``recvfrom_into`` until EAGAIN
(at most ``RECEIVES_PER_TURN``, so that calls from other threads and a stop are
not starved; the event is level-triggered, so the rest come next turn).  Python's
socket has no recvmmsg/sendmmsg; batching them through ctypes was not profiled to
pay, so each datagram costs one system call.  Sends go straight to the socket;
only what the kernel refuses with EAGAIN is queued (bounded by ``send_queue``)
and flushed on EPOLLOUT.
"""

from __future__ import annotations

import collections
import logging
import select
import socket
import threading
from collections.abc import Callable
from functools import partial

from railcar.engine._datagrams import CountingEndpoint
from railcar.engine._failures import call_logged
from railcar.engine._reactor import ReactorCore
from railcar.engine.api import (
    Address,
    Buffer,
    DatagramEndpoint,
    DatagramHandler,
    DatagramOptions,
    DatagramServer,
    Handler,
)
from railcar.engine.listen import bind_datagram

log = logging.getLogger("railcar.engine.epoll")

RECEIVES_PER_TURN = 256
_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
# The reactor core delivers deferred connection events to a stream handler; a datagram
# server has no connections, so none ever come.
_NO_STREAM_HANDLER = Handler()


class _EpollEndpoint(CountingEndpoint):
    __slots__ = ("_events", "_limit", "_queue", "_queued", "_reactor", "_sock")

    def __init__(self, reactor: _DatagramReactor, sock: socket.socket) -> None:
        server = reactor.server
        super().__init__(sock.getsockname(), server.stats, server.handler, server.options)
        self._reactor = reactor
        self._sock = sock
        self._limit = server.options.send_queue
        self._queue: collections.deque[tuple[Address, bytes]] = collections.deque()
        self._queued = 0
        self._events = _IN

    def send_to(self, addr: Address, data: Buffer) -> bool:
        """Send one datagram to ``addr``; False if dropped (send queue full, or the kernel refused it).

        Raises ConnectionClosed once the server stopped, ValueError over ``max_datagram``.
        """
        size = data.nbytes if type(data) is memoryview else len(data)
        if self._closed or size > self._max:
            self.refuse_outgoing(size)
        if self._queue:
            return self._enqueue(addr, data, size)
        try:
            self._sock.sendto(data, addr)
        except BlockingIOError:
            return self._enqueue(addr, data, size)
        except OSError as exc:
            return self.refused(addr, exc)
        self.stats.sent += 1
        return True

    def _enqueue(self, addr: Address, data: Buffer, size: int) -> bool:
        if self._queued >= self._limit:
            return self.dropped(addr)
        self._queue.append((addr, bytes(data)))  # the receive buffer is reused: copy
        self._queued += size
        self._watch(_IN | _OUT if self._events & _IN else _OUT)
        return True

    def flush(self) -> None:
        """Send queued datagrams until the kernel's buffer is full again or the queue is empty."""
        queue, sock, stats = self._queue, self._sock, self.stats
        while queue:
            addr, data = queue[0]
            try:
                sock.sendto(data, addr)
            except BlockingIOError:
                return
            except OSError as exc:
                self.refused(addr, exc)
            else:
                stats.sent += 1
            queue.popleft()
            self._queued -= len(data)
        self._watch(self._events & _IN)

    def stop_receiving(self) -> None:
        """Stop reading: a stopping server only drains its queue."""
        self._watch(self._events & _OUT)

    def _watch(self, events: int) -> None:
        if events != self._events:
            self._events = events
            self._reactor.epoll.modify(self._sock.fileno(), events)

    @property
    def send_queue_size(self) -> int:
        """Bytes of datagrams accepted by ``send_to`` that the kernel has not taken yet."""
        return self._queued

    def close(self) -> None:
        """Refuse further sends and drop what is still queued."""
        self._closed = True
        self._queue.clear()
        self._queued = 0


class _DatagramReactor:
    """One run of an epoll datagram server: its socket, epoll object, core and thread."""

    def __init__(self, server: EpollDatagramServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.core = ReactorCore(_NO_STREAM_HANDLER)
        try:
            self.epoll = select.epoll()
        except BaseException:
            self.core.close()
            raise
        self.endpoint = _EpollEndpoint(self, sock)
        self.epoll.register(sock.fileno(), _IN)
        self.epoll.register(self.core.calls.fileno(), _IN)
        self.thread = threading.Thread(target=self._run, name="railcar-epoll-udp")

    def stop(self, deadline: float) -> None:
        """Stop receiving and wait for the thread to drain the send queue (up to ``deadline``)."""
        self.core.calls.put(lambda: self._begin_stop(deadline))
        self.thread.join()

    def _begin_stop(self, deadline: float) -> None:
        self.core.stop.begin(deadline)
        self.endpoint.stop_receiving()

    def _run(self) -> None:
        server = self.server
        call_logged(partial(server.handler.on_start, server))
        core, stop, endpoint, sock = self.core, self.core.stop, self.endpoint, self.sock
        on_datagram, stats = server.handler.on_datagram, server.stats
        largest = server.options.max_datagram
        size = largest + 1  # one byte more: a cut datagram shows as oversized
        buffer = bytearray(size)
        view = memoryview(buffer)
        recvfrom_into = sock.recvfrom_into
        sock_fd, calls_fd = sock.fileno(), core.calls.fileno()
        poll = self.epoll.poll
        try:
            while stop.at is None or not stop.finished(endpoint.send_queue_size, server.abort_requested):
                timeout = core.timeout()
                for fd, events in poll(-1 if timeout is None else timeout):
                    if fd == calls_fd:
                        core.calls.run()
                        continue
                    if fd != sock_fd:
                        continue
                    if events & _IN:
                        for _ in range(RECEIVES_PER_TURN):
                            try:
                                received, addr = recvfrom_into(buffer, size)
                            except BlockingIOError:
                                break
                            except OSError as exc:  # an ICMP error queued on the socket
                                log.debug("receive error on the datagram socket: %s", exc)
                                continue
                            # endpoint.deliver, inlined: this is the per-datagram path
                            if received > largest:
                                endpoint.oversized(addr)
                                continue
                            stats.received += 1
                            try:
                                on_datagram(endpoint, addr, view[:received])
                            except Exception as exc:  # noqa: BLE001 - a handler bug loses only its datagram
                                endpoint.handler_failed(addr, exc)
                    if events & _OUT:
                        endpoint.flush()
        finally:
            endpoint.close()
            core.close()
            self.epoll.close()
            sock.close()


class EpollDatagramServer(DatagramServer):
    """A reactor thread serving one UDP socket with epoll, on the shared reactor core."""

    engine = "epoll"

    def __init__(self, handler: DatagramHandler, options: DatagramOptions) -> None:
        super().__init__(handler, options)
        self._reactor: _DatagramReactor | None = None

    @property
    def endpoint(self) -> DatagramEndpoint:
        """The endpoint handlers send with; raises RuntimeError while the server is not running."""
        if self._reactor is None:
            raise RuntimeError("server is not running")
        return self._reactor.endpoint

    def call_soon_threadsafe(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` on the engine's thread; raises RuntimeError if not running."""
        if self._reactor is None:
            raise RuntimeError("server is not running")
        self._reactor.core.calls.put(callback)

    def _start(self) -> None:
        sock = bind_datagram(self.options)
        try:
            reactor = _DatagramReactor(self, sock)
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
