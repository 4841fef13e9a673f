"""The epoll engine's datagram server: one non-blocking UDP socket on its own reactor thread.

The socket work (reading until EAGAIN per readiness event, the bounded send
queue) is ``SocketEndpoint``'s; this module runs it on a reactor thread of the
shared reactor core, watching EPOLLOUT only while datagrams are queued.
"""

from __future__ import annotations

import select
import socket
import threading
from functools import partial

from railcar.engine._failures import call_logged
from railcar.engine._reactor import ReactorCore, ReactorDatagramServer
from railcar.engine._socket_datagrams import SocketEndpoint
from railcar.engine.api import (
    Handler,
)

_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
# The reactor core delivers deferred connection events to a stream handler; a datagram
# server has no connections, so none ever come.
_NO_STREAM_HANDLER = Handler()


class _EpollEndpoint(SocketEndpoint):
    __slots__ = ("_epoll", "_events")

    def __init__(self, server: EpollDatagramServer, sock: socket.socket, epoll: select.epoll) -> None:
        super().__init__(sock, server.stats, server.handler, server.options)
        self._epoll = epoll
        self._events = _IN

    def _want_writable(self, wanted: bool) -> None:
        self._watch(self._events | _OUT if wanted else self._events & ~_OUT)

    def stop_receiving(self) -> None:
        """Stop reading: a stopping server only drains its queue."""
        self._watch(self._events & ~_IN)

    def _watch(self, events: int) -> None:
        if events != self._events:
            self._events = events
            self._epoll.modify(self._sock.fileno(), events)


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
        self.endpoint = _EpollEndpoint(server, sock, self.epoll)
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
        receive, flush = endpoint.receive, endpoint.flush
        sock_fd, calls_fd = sock.fileno(), core.calls.fileno()
        poll = self.epoll.poll
        try:
            while stop.at is None or not stop.finished(endpoint.send_queue_size, server.abort_requested):
                timeout = core.timeout()
                for fd, events in poll(-1 if timeout is None else timeout):
                    if fd == calls_fd:
                        core.calls.run()
                    elif fd == sock_fd:
                        if events & _IN:
                            receive()
                        if events & _OUT:
                            flush()
        finally:
            endpoint.close()
            core.close()
            self.epoll.close()
            sock.close()


class EpollDatagramServer(ReactorDatagramServer):
    """A reactor thread serving one UDP socket with epoll, on the shared reactor core."""

    engine = "epoll"

    def _new_run(self, sock: socket.socket) -> _DatagramReactor:
        return _DatagramReactor(self, sock)
