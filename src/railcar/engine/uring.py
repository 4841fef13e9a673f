"""The uring engine: a single-threaded completion loop on io_uring, on the shared reactor core.

Every socket operation is a submission to one ring (``_uring.Ring``, a small C
extension against liburing): a multishot accept on the listener, a multishot
receive per connection that picks its buffer from a provided buffer ring (so an
idle connection holds no read buffer), one send per connection per turn of
everything its handler wrote meanwhile (write coalescing), and cancellations.
Each loop turn makes one ``io_uring_submit_and_wait`` and gets every completion
back as one batch.  The call queue's eventfd is watched by a multishot poll.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from functools import partial

from railcar.engine._failures import call_guarded, call_logged, handler_failed
from railcar.engine._reactor import ReactorCore, ReactorServer
from railcar.engine._uring import ACCEPT, KIND_BITS, POLL, QUIET_SEND, RECV, SEND, Ring
from railcar.engine.api import Buffer, Conn
from railcar.engine.listen import set_nodelay
from railcar.errors import ConnectionClosed

log = logging.getLogger("railcar.engine.uring")

RING_ENTRIES = 1024  # submission queue slots; a fuller queue is submitted early, not refused
RECV_BUFFERS = 256  # provided receive buffers shared by every connection (a power of two)
RECV_BUFFER_MAX = 64 * 1024  # each one is min(read_buffer, this) bytes
TEARDOWN_WAIT = 1.0  # how long a stopped loop waits for cancelled sends to give their buffers back
_OPEN, _CLOSING, _CLOSED = 0, 1, 2
_LISTENER, _CALLS, _FIRST_CONN = 1, 2, 16  # completion ids; connections count up from _FIRST_CONN


def _ud(cid: int, kind: int) -> int:
    return cid << KIND_BITS | kind


class _UringConn(Conn):
    __slots__ = (
        "_cid",
        "_eof",
        "_fd",
        "_held",
        "_held_eof",
        "_more",
        "_pending",
        "_queued",
        "_reactor",
        "_recv_armed",
        "_send_ud",
        "_sending",
        "_sock",
        "_state",
    )

    def __init__(self, reactor: _Reactor, sock: socket.socket, peer: tuple[object, ...] | str, cid: int):
        super().__init__(peer, sock.getsockname())
        self._reactor = reactor
        self._sock = sock
        self._fd = sock.fileno()
        self._cid = cid
        self._send_ud = cid << KIND_BITS | SEND  # QUIET_SEND while nobody waits for it
        # Output: the first chunk written since the last send, any further ones (a list made
        # only then), and the send in flight, kept alive until its completion.  One chunk
        # per turn is the common case, and it costs neither a queue nor a copy; an idle
        # connection holds none of it.
        self._pending: bytes | None = None
        self._more: list[bytes] | None = None
        self._sending: bytes | None = None
        self._queued = 0  # bytes written that the kernel has not taken (write_buffer_size)
        self._state = _OPEN
        self._recv_armed = False
        self._eof = False
        # What arrived after reading was paused (a multishot receive already under way
        # cannot be taken back), one chunk per receive, delivered when reading resumes.
        self._held: collections.deque[bytes] | None = None
        self._held_eof = False

    # -- output -----------------------------------------------------------------------------

    def write(self, data: Buffer) -> None:
        """Queue bytes, sent with everything else written this turn; raises ConnectionClosed."""
        if self._state:
            raise ConnectionClosed(f"connection {self.peer} is closed")
        # The read buffer is recycled after the turn: keep an immutable copy.
        chunk = data if type(data) is bytes else bytes(data)
        if not chunk:
            return
        if self._pending is None:
            self._pending = chunk
            if self._sending is None:
                self._reactor.dirty.append(self)
        elif self._more is None:
            self._more = [chunk]
        else:
            self._more.append(chunk)
        self._queued += len(chunk)
        if self._queued > self._reactor.high_water:
            self._set_write_paused(True)

    def writelines(self, chunks: Iterable[Buffer]) -> None:
        """Queue several buffers, sent with one submission; raises ConnectionClosed."""
        if self._state:
            raise ConnectionClosed(f"connection {self.peer} is closed")
        for chunk in chunks:
            self.write(chunk)

    def take_joined(self, first: bytes) -> bytes:
        """Return ``first`` (the pending chunk) and the chunks written after it as one bytes object."""
        data = b"".join([first, *(self._more or ())])
        self._pending = self._more = None
        return data

    def sent_all(self) -> None:
        """Resume reading once everything queued went out after backpressure."""
        self._set_write_paused(False)
        self._reactor.core.events.writable.append(self)

    def sent(self, result: int) -> None:
        """Account for a send completion: ``result`` bytes went out, or -errno."""
        sending = self._sending
        self._sending = None
        if result < 0:
            self._reactor.lose(self, OSError(-result, os.strerror(-result)))
            return
        self._queued -= result
        reactor = self._reactor
        if sending is not None and result < len(sending):
            # Only a failing connection sends short under MSG_WAITALL; requeue the rest first.
            rest = sending[result:]
            if self._pending is not None:
                self._more = [self._pending, *(self._more or ())]
            self._pending = rest
        if self._pending is not None:
            reactor.dirty.append(self)
        elif self._state == _CLOSING:
            reactor.finish(self, None)
            return
        if self._write_paused and self._queued <= reactor.low_water:
            self._set_write_paused(False)
            reactor.core.events.writable.append(self)

    # -- life cycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close after the queued output has been sent; a no-op if already closing."""
        if self._state != _OPEN:
            return
        if self._queued:
            self._state = _CLOSING
            self._stop_receiving()
        else:
            self._reactor.finish(self, None)

    def abort(self) -> None:
        """Close at once, discarding queued output."""
        if self._state != _CLOSED:
            self._drop_output()
            self._reactor.finish(self, None)

    def fileno(self) -> int:
        """The socket's file descriptor, for socket options; never read or write it directly."""
        return self._fd

    @property
    def write_buffer_size(self) -> int:
        """Bytes accepted by ``write`` that the kernel has not taken yet."""
        return self._queued

    def _drop_output(self) -> None:
        self._pending = self._more = None
        self._queued = 0

    @property
    def closed(self) -> bool:
        """True once ``close``/``abort`` was called or the connection was lost."""
        return self._state != _OPEN

    # -- input ------------------------------------------------------------------------------

    def _apply_reading(self) -> None:
        if self._state != _OPEN:
            return
        if not self.reading:
            self._stop_receiving()
            return
        if self._held is not None or self._held_eof:
            self._reactor.ready.append(self)
        else:
            self.arm()

    def arm(self) -> None:
        """Submit a multishot receive if this connection should read and has none under way."""
        if not self._recv_armed and self._state == _OPEN and not self._eof and self.reading:
            self._recv_armed = True
            self._reactor.ring.recv(self._fd, _ud(self._cid, RECV))

    def _stop_receiving(self) -> None:
        if self._recv_armed:
            # The receive ends with -ECANCELED; _recv_armed stays set until then, so a
            # quick resume does not submit a second one beside it.
            self._reactor.ring.cancel(_ud(self._cid, RECV))

    def hold(self, data: memoryview) -> None:
        """Keep bytes that arrived while reading was paused, for when it resumes."""
        if self._held is None:
            self._held = collections.deque()
        self._held.append(bytes(data))

    def deliver_held(self) -> None:
        """Hand what was held to the handler, a receive's worth at a time while it reads, then read again."""
        held = self._held
        while held:
            if self._state != _OPEN or not self.reading:
                return  # paused again: the rest waits for the next resume
            try:
                self._reactor.on_data(self, memoryview(held.popleft()))
            except Exception as exc:  # noqa: BLE001 - a handler bug closes only its connection
                handler_failed(self, exc)
                return
        self._held = None
        if self._state != _OPEN or not self.reading:
            return
        if self._held_eof:
            self._held_eof = False
            self._reactor.eof(self)
        else:
            self.arm()


class _Reactor:
    """One run of a uring server, from start to stop: its listener, ring, core and thread.

    Each start makes a new one, so a stopped server restarts with nothing of the last run.
    """

    def __init__(self, server: UringServer, listener: socket.socket) -> None:
        self.server = server
        self.handler = server.handler
        self.options = server.options
        self.high_water = server.options.high_water
        self.low_water = server.options.low_water
        self.on_data = server.on_data
        self.conns: dict[int, _UringConn] = {}
        # Closed connections whose send is still under way: they keep its bytes alive.
        self.zombies: dict[int, _UringConn] = {}
        self.dirty: list[_UringConn] = []  # connections with output to submit this turn
        self.ready: list[_UringConn] = []  # connections with held input to deliver
        self.listener: socket.socket | None = listener
        self.accept_armed = False
        self._next_cid = _FIRST_CONN
        bufsize = min(server.options.read_buffer, RECV_BUFFER_MAX)
        self.ring = Ring(RING_ENTRIES, RECV_BUFFERS, bufsize)
        try:
            self.core = ReactorCore(server.handler)
        except BaseException:
            self.ring.close()
            raise
        self.thread = threading.Thread(target=self._run, name="railcar-uring")

    def stop(self, deadline: float) -> None:
        """Stop accepting and wait for the loop thread to close every connection."""
        self.core.calls.put(lambda: self._begin_stop(deadline))
        self.thread.join()

    def adopt(self, sock: socket.socket) -> None:
        """Open a connection on ``sock`` on the loop thread; raises RuntimeError once the run ended."""
        self.core.calls.put(lambda: self._adopt_now(sock))

    # -- called by connections ------------------------------------------------------------

    def lose(self, conn: _UringConn, exc: BaseException) -> None:
        """Drop a connection whose socket failed."""
        conn._drop_output()
        self.finish(conn, exc)

    def finish(self, conn: _UringConn, exc: BaseException | None) -> None:
        """Cancel a connection's requests and close it now; its on_close runs at the end of this turn."""
        if conn._state == _CLOSED:
            return
        conn._state = _CLOSED
        cid = conn._cid
        del self.conns[cid]
        ring = self.ring
        if conn._recv_armed:
            ring.cancel(_ud(cid, RECV))
        if conn._sending is not None:
            ring.cancel(conn._send_ud)
            self.zombies[cid] = conn
        # The kernel keeps the socket until its cancelled requests complete; the
        # completions name the connection id, never the descriptor number, which the
        # next accept may reuse.
        conn._sock.close()
        conn._held = None
        self.core.events.closed.append((conn, exc))

    def eof(self, conn: _UringConn) -> None:
        """The peer shut down its side: ask the handler whether to keep writing."""
        keep_open = call_guarded(conn, self.handler.on_eof, conn)
        if keep_open and not conn.closed:
            conn._eof = True
        else:
            conn.close()

    # -- the loop -------------------------------------------------------------------------

    def _run(self) -> None:
        server = self.server
        core = self.core
        ring = self.ring
        try:
            ring.enable()  # this thread submits from now on
        except OSError:
            log.exception("cannot enable the io_uring ring; the server stops")
            core.close()
            ring.close()
            return
        call_logged(partial(self.handler.on_start, server))
        stop = core.stop
        accepts = core.accepts
        events_due = core.events
        conns = self.conns
        on_data = self.on_data
        view = memoryview(ring)
        wait = ring.wait
        ring.poll(core.calls.fileno(), _ud(_CALLS, POLL))
        self._arm_accept()
        try:
            while stop.at is None or not stop.finished(len(conns), server.abort_requested):
                if accepts.until and accepts.due():
                    accepts.resume()
                    self._arm_accept()
                # Sends to connections whose completion nobody waits for (open, not over the
                # high-water mark) go as QUIET_SEND: they usually complete during the
                # submission itself, and the ring does not count their completions as a
                # reason to wake (a turn per event, not two), yet never waits for one that
                # cannot come (a peer that does not read).
                quiet = self._submit_sends() if self.dirty else 0
                timeout = None if stop.at is None and not accepts.until else core.timeout()
                for kind, cid, res, offset, more in wait(timeout, quiet > 0):
                    if kind == RECV:
                        conn = conns.get(cid)
                        if conn is None:
                            continue  # closed meanwhile: its buffer goes back to the ring anyway
                        if res > 0:
                            if conn._state == _OPEN:
                                if not (conn._user_paused or conn._write_paused or conn._held):
                                    try:
                                        on_data(conn, view[offset : offset + res])
                                    except Exception as exc:  # noqa: BLE001 - a handler bug closes only its connection
                                        handler_failed(conn, exc)
                                        continue
                                else:
                                    conn.hold(view[offset : offset + res])
                            if not more:
                                conn._recv_armed = False
                                conn.arm()
                        else:
                            conn._recv_armed = False
                            self._recv_ended(conn, res)
                    elif kind in (SEND, QUIET_SEND):
                        conn = conns.get(cid)
                        if conn is None:
                            self.zombies.pop(cid, None)
                        elif conn._pending is None and not conn._state and res == conn._queued:
                            # The common case inline: everything went, nothing waits on it.
                            conn._sending = None
                            conn._queued = 0
                            if conn._write_paused:
                                conn.sent_all()
                        else:
                            conn.sent(res)
                    elif kind == ACCEPT:
                        self._accepted(res, more)
                    elif kind == POLL:
                        core.calls.run()
                        if not more:
                            ring.poll(core.calls.fileno(), _ud(_CALLS, POLL))
                while self.ready or events_due.closed or events_due.writable:
                    ready, self.ready = self.ready, []
                    for conn in ready:
                        conn.deliver_held()
                    events_due.deliver()
            call_logged(partial(self.handler.on_stop, server))
        finally:
            self._teardown()

    def _recv_ended(self, conn: _UringConn, res: int) -> None:
        """A connection's multishot receive ended with EOF (0) or -errno."""
        if res == 0:
            if conn._state != _OPEN:
                return
            if conn.reading and conn._held is None:
                self.eof(conn)
            else:
                conn._held_eof = True
        elif res == -errno.ENOBUFS:
            # Every provided buffer was in use this turn; they are back in the ring before
            # the next submission, so receiving again is safe.
            log.debug("receive buffers ran out on connection %s; receiving again", conn.peer)
            conn.arm()
        elif res == -errno.ECANCELED:
            conn.arm()  # cancelled by a pause: receives again if reading resumed meanwhile
        else:
            self.lose(conn, OSError(-res, os.strerror(-res)))

    def _submit_sends(self) -> int:
        """Submit one send per connection of everything queued; return how many are quiet."""
        dirty, self.dirty = self.dirty, []
        send = self.ring.send
        quiet = 0
        stopping = self.core.stop.stopping
        for conn in dirty:
            if conn._state == _CLOSED or conn._sending is not None:
                continue
            data = conn._pending
            if data is None:
                continue
            if conn._more is None:
                conn._pending = None
            else:
                data = conn.take_joined(data)
            conn._sending = data
            is_quiet = not (conn._state or conn._write_paused or stopping)
            conn._send_ud = _ud(conn._cid, QUIET_SEND if is_quiet else SEND)
            send(conn._fd, conn._send_ud, data)
            quiet += is_quiet
        return quiet

    def _arm_accept(self) -> None:
        listener = self.listener
        if listener is not None and not self.accept_armed and not self.core.accepts.paused:
            self.accept_armed = True
            self.ring.accept(listener.fileno(), _ud(_LISTENER, ACCEPT))

    def _accepted(self, res: int, more: bool) -> None:
        if not more:
            self.accept_armed = False
        listener = self.listener
        if res >= 0:
            if listener is None:
                os.close(res)  # accepted as the stop began
                return
            sock = socket.socket(listener.family, socket.SOCK_STREAM, 0, res)
            try:
                peer = sock.getpeername()
            except OSError:
                peer = ""  # reset already: the receive reports it, as on the other engines
            self._open(sock, peer)
        elif res != -errno.ECANCELED and listener is not None:
            exc = OSError(-res, os.strerror(-res))
            if self.core.accepts.pause_for(exc):
                if more:
                    self.ring.cancel(_ud(_LISTENER, ACCEPT))
                return
            log.warning("accept failed: %s", exc.strerror)
        if not self.accept_armed:
            self._arm_accept()

    def _adopt_now(self, sock: socket.socket) -> None:
        peer = self.core.adopted_peer(sock)
        if peer is not None:
            sock.setblocking(False)
            self._open(sock, peer)

    def _open(self, sock: socket.socket, peer: tuple[object, ...] | str) -> None:
        set_nodelay(sock, self.options.nodelay)
        cid = self._next_cid
        self._next_cid += 1
        conn = _UringConn(self, sock, peer or "", cid)
        self.conns[cid] = conn
        call_guarded(conn, self.handler.on_open, conn)
        conn.arm()

    def _begin_stop(self, deadline: float) -> None:
        self.core.stop.begin(deadline)
        if self.listener is not None:
            if self.accept_armed:
                self.ring.cancel(_ud(_LISTENER, ACCEPT))
            self.listener.close()
            self.listener = None
        for conn in list(self.conns.values()):
            conn.close()

    def _teardown(self) -> None:
        for conn in list(self.conns.values()):
            conn.abort()
        self.core.close()
        if self.listener is not None:  # the loop failed before a stop closed it
            self._begin_stop(0.0)
        # Sends cancelled above still point into their bytes, and a multishot accept still
        # armed would take connections from a listening socket the caller keeps (``sock=``)
        # for a ring about to go: wait, briefly, for the kernel to end both.
        until = time.monotonic() + TEARDOWN_WAIT
        while (self.zombies or self.accept_armed) and time.monotonic() < until:
            for kind, cid, res, _offset, more in self.ring.wait(0.05):
                if kind in (SEND, QUIET_SEND):
                    self.zombies.pop(cid, None)
                elif kind == ACCEPT:
                    self.accept_armed = more
                    if res >= 0:
                        os.close(res)  # accepted as the server stopped
        self.ring.close()


class UringServer(ReactorServer):
    """A loop thread driving every connection through one io_uring, on the shared reactor core."""

    engine = "uring"

    def _new_run(self, listener: socket.socket) -> _Reactor:
        return _Reactor(self, listener)
