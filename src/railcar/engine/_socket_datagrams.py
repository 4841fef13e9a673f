"""A datagram endpoint doing its own socket I/O, for loops that report readiness (epoll, selectors).

Per readiness event ``receive`` reads with ``recvfrom_into`` until EAGAIN, at most
``RECEIVES_PER_TURN`` datagrams, so that the rest of the loop (calls from other
threads, a stop, other sockets) is not starved; readiness is level-triggered, so
the rest come next turn.  Reading until EAGAIN rather than once per event is what
makes a busy server cheap: the selector loop's own datagram transport reads one
datagram per ``select`` and spent 25,700 instructions per echoed datagram
against 10,600 for this loop on epoll (callgrind).  Python's socket has no
recvmmsg/sendmmsg; see docs/architecture.md for why ctypes batching is not used.

Sends go straight to the socket; only what the kernel refuses with EAGAIN is
queued (bounded by ``send_queue``, past it dropped and counted) and flushed once
the loop reports the socket writable.  Subclasses say how to watch for that.
"""

from __future__ import annotations

import collections
import logging
import socket

from railcar.engine._datagrams import CountingEndpoint
from railcar.engine.api import Address, Buffer, DatagramHandler, DatagramOptions, DatagramStats

log = logging.getLogger("railcar.engine.datagram")

RECEIVES_PER_TURN = 256


class SocketEndpoint(CountingEndpoint):
    """A non-blocking UDP socket, its receive buffer and its bounded send queue."""

    __slots__ = ("_buffer", "_limit", "_queue", "_queued", "_sock")

    def __init__(
        self, sock: socket.socket, stats: DatagramStats, handler: DatagramHandler, options: DatagramOptions
    ) -> None:
        super().__init__(sock.getsockname(), stats, handler, options)
        self._sock = sock
        # One byte more than the largest datagram: one the kernel cut short shows as oversized.
        self._buffer = bytearray(options.max_datagram + 1)
        self._limit = options.send_queue
        self._queue: collections.deque[tuple[Address, bytes]] = collections.deque()
        self._queued = 0

    def receive(self) -> None:
        """Read and deliver the datagrams waiting on the socket (at most ``RECEIVES_PER_TURN``)."""
        recvfrom_into, buffer, stats, on_datagram = (
            self._sock.recvfrom_into,
            self._buffer,
            self.stats,
            self._on_datagram,
        )
        size = len(buffer)
        largest = size - 1
        with memoryview(buffer) as view:
            for _ in range(RECEIVES_PER_TURN):
                try:
                    received, addr = recvfrom_into(buffer, size)
                except BlockingIOError:
                    return
                except OSError as exc:  # an ICMP error queued on the socket
                    log.debug("receive error on the datagram socket: %s", exc)
                    continue
                if received > largest:
                    self.oversized(addr)
                    continue
                stats.received += 1
                try:
                    on_datagram(self, addr, view[:received])
                except Exception as exc:  # noqa: BLE001 - a handler bug loses only its datagram
                    self.handler_failed(addr, exc)

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
        was_empty = not self._queue
        self._queue.append((addr, bytes(data)))  # the receive buffer is reused: copy
        self._queued += size
        if was_empty:
            self._want_writable(True)
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
        self._want_writable(False)

    def _want_writable(self, wanted: bool) -> None:
        """Start or stop watching the socket for room to send (the loop then calls ``flush``)."""
        raise NotImplementedError

    @property
    def send_queue_size(self) -> int:
        """Bytes of datagrams accepted by ``send_to`` that the kernel has not taken yet."""
        return self._queued

    def close(self) -> None:
        """Refuse further sends and drop what is still queued (the socket is the server's to close)."""
        self._closed = True
        self._queue.clear()
        self._queued = 0
