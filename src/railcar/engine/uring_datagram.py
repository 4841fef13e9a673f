"""The uring engine's datagram server: one UDP socket driven through an io_uring on its own thread.

One multishot recvmsg takes every datagram into the ring's provided buffers (a
buffer holds the sender's address and the payload; an empty buffer ring ends the
request with -ENOBUFS, the datagrams wait in the socket, and the request is made
again once the turn's buffers are back).  ``send_to`` prepares a sendmsg; all of a
turn's sends go to the kernel with the next ``io_uring_submit_and_wait``, which
also collects their completions, so a turn of echoes costs one system call.  A
datagram is dropped and counted once ``send_queue`` bytes have stayed in flight
past a turn (the kernel's send buffer is full) or ``SEND_SLOTS`` are in flight.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
import time
from functools import partial
from typing import Any

from railcar.engine._datagrams import CountingEndpoint
from railcar.engine._failures import call_logged
from railcar.engine._reactor import ReactorCore, ReactorDatagramServer
from railcar.engine._uring import KIND_BITS, POLL, RECVMSG, RECVMSG_OVERHEAD, SENDMSG, Ring
from railcar.engine.api import (
    Address,
    Buffer,
    Handler,
)

log = logging.getLogger("railcar.engine.datagram")

RING_ENTRIES = 1024  # submission queue slots; a fuller queue is submitted early, not refused
RECV_BUFFERS = 256  # provided buffers, so at most this many datagrams per turn (a power of two)
TEARDOWN_WAIT = 1.0  # how long a stopped loop waits for cancelled requests to end
_SOCKET, _CALLS = 1, 2  # completion ids
_RECV_UD = _SOCKET << KIND_BITS | RECVMSG
# Errors after which receiving again would fail the same way at once: the loop stops receiving.
_FATAL = frozenset({errno.EBADF, errno.ENOTSOCK, errno.EINVAL, errno.EOPNOTSUPP})
# The reactor core delivers deferred connection events to a stream handler; a datagram
# server has no connections, so none ever come.
_NO_STREAM_HANDLER = Handler()


class _UringEndpoint(CountingEndpoint):
    __slots__ = ("_family", "_fd", "_limit", "_sendto", "ring", "sends")

    def __init__(self, server: UringDatagramServer, sock: socket.socket, ring: Ring) -> None:
        super().__init__(sock.getsockname(), server.stats, server.handler, server.options)
        self.ring = ring
        self._sendto = ring.sendto
        self._fd = sock.fileno()
        self._family = int(sock.family)
        self._limit = server.options.send_queue
        self.sends = 0  # prepared since the last submission: the loop then waits for an event

    def send_to(self, addr: Address, data: Buffer) -> bool:
        """Send one datagram to ``addr``; False if dropped (send queue full, or the kernel refused it).

        Raises ConnectionClosed once the server stopped, ValueError over ``max_datagram``.
        """
        size = data.nbytes if type(data) is memoryview else len(data)
        if self._closed or size > self._max:
            self.refuse_outgoing(size)
        try:
            queued = self._sendto(self._fd, self._family, addr, data, self._limit)
        except ValueError:  # a host name, not an address: resolved as socket.sendto would
            try:
                queued = self._sendto(self._fd, self._family, self._resolve(addr), data, self._limit)
            except OSError as exc:
                return self.refused(addr, exc)
        if not queued:
            return self.dropped(addr)
        self.sends += 1
        self.stats.sent += 1
        return True

    def _resolve(self, addr: Address) -> tuple[Any, ...]:
        """``addr`` with its host replaced by the first address of the socket's family; raises OSError."""
        info = socket.getaddrinfo(addr[0], addr[1], self._family, socket.SOCK_DGRAM)
        return (info[0][4][0], *addr[1:])

    def failed(self, addr: Address, res: int) -> None:
        """A send the kernel refused after ``send_to`` counted it sent."""
        self.stats.sent -= 1
        self.refused(addr, OSError(-res, os.strerror(-res)))

    @property
    def send_queue_size(self) -> int:
        """Bytes of datagrams accepted by ``send_to`` that the kernel has not taken yet."""
        return self.ring.sending

    def close(self) -> None:
        """Refuse further sends (what is in flight is cancelled by the loop)."""
        self._closed = True


class _DatagramReactor:
    """One run of a uring datagram server: its socket, ring, core and thread."""

    def __init__(self, server: UringDatagramServer, sock: socket.socket) -> None:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            raise ValueError("the uring engine serves datagrams over IPv4 and IPv6 only")
        self.server = server
        self.sock = sock
        self.ring = Ring(RING_ENTRIES, RECV_BUFFERS, RECVMSG_OVERHEAD + server.options.max_datagram)
        try:
            self.core = ReactorCore(_NO_STREAM_HANDLER)
        except BaseException:
            self.ring.close()
            raise
        self.endpoint = _UringEndpoint(server, sock, self.ring)
        self.receiving = False  # a recvmsg is under way
        self.thread = threading.Thread(target=self._run, name="railcar-uring-udp")

    def stop(self, deadline: float) -> None:
        """Stop receiving and wait for the thread to see the sends in flight out (up to ``deadline``)."""
        self.core.calls.put(lambda: self._begin_stop(deadline))
        self.thread.join()

    def _begin_stop(self, deadline: float) -> None:
        self.core.stop.begin(deadline)
        if self.receiving:
            self.ring.cancel(_RECV_UD)

    def _receive(self) -> None:
        if not self.receiving and not self.core.stop.stopping:
            self.receiving = True
            self.ring.recvmsg(self.sock.fileno(), _RECV_UD)

    def _run(self) -> None:
        server, core, ring, endpoint = self.server, self.core, self.ring, self.endpoint
        try:
            ring.enable()  # this thread submits from now on
        except OSError:
            log.exception("cannot enable the io_uring ring; the datagram server stops")
            self._teardown()
            return
        call_logged(partial(server.handler.on_start, server))
        stop, stats, on_datagram = core.stop, server.stats, endpoint._on_datagram
        largest = server.options.max_datagram
        view = memoryview(ring)
        wait = ring.wait
        ring.poll(core.calls.fileno(), _CALLS << KIND_BITS | POLL)
        self._receive()
        try:
            while stop.at is None or not stop.finished(ring.sending, server.abort_requested):
                # Sends prepared since the last turn complete during the submission, as a rule;
                # their completions alone are no reason to wake (see _uring.c).
                quiet, endpoint.sends = endpoint.sends > 0, 0
                for kind, _cid, res, offset, extra in wait(core.timeout(), quiet):
                    if kind == RECVMSG:
                        if extra is None:
                            self._receive_ended(res)
                        elif res > largest:
                            endpoint.oversized(extra)
                        else:
                            stats.received += 1
                            try:
                                on_datagram(endpoint, extra, view[offset : offset + res])
                            except Exception as exc:  # noqa: BLE001 - a handler bug loses only its datagram
                                endpoint.handler_failed(extra, exc)
                    elif kind == SENDMSG:
                        endpoint.failed(extra, res)
                    elif kind == POLL:
                        core.calls.run()
                        if not extra:
                            ring.poll(core.calls.fileno(), _CALLS << KIND_BITS | POLL)
                core.events.deliver()
        finally:
            self._teardown()

    def _receive_ended(self, res: int) -> None:
        """The multishot recvmsg ended (0 or -errno): receive again unless stopping or hopeless."""
        self.receiving = False
        if res == -errno.ENOBUFS:
            # Every buffer held a datagram this turn; they go back to the ring before the
            # next submission, and what did not fit waits in the socket meanwhile.
            log.debug("datagram receive buffers ran out; receiving again")
        elif res == -errno.ECANCELED or self.core.stop.stopping:
            return
        elif -res in _FATAL:
            log.error("datagram socket failed (%s); no longer receiving", os.strerror(-res))
            return
        elif res < 0:
            log.debug("receive error on the datagram socket: %s", os.strerror(-res))
        self._receive()

    def _teardown(self) -> None:
        self.endpoint.close()
        self.core.close()
        ring = self.ring
        # Requests still under way point into the ring's buffers and send slots: cancel
        # them and wait, briefly, for the kernel to end them before the ring goes.
        if ring.sending or self.receiving:
            ring.cancel_fd(self.sock.fileno())
            until = time.monotonic() + TEARDOWN_WAIT
            while (ring.sending or self.receiving) and time.monotonic() < until:
                for kind, _cid, _res, _offset, extra in ring.wait(0.05):
                    if kind == RECVMSG and extra is None:
                        self.receiving = False
        ring.close()  # frees the send slots: send_queue_size is 0 from here on
        self.sock.close()


class UringDatagramServer(ReactorDatagramServer):
    """A thread serving one UDP socket through an io_uring, on the shared reactor core."""

    engine = "uring"

    def _new_run(self, sock: socket.socket) -> _DatagramReactor:
        return _DatagramReactor(self, sock)
