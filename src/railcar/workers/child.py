"""What runs in a worker process: one engine's server, stopped by SIGTERM, reporting its connections.

The worker talks to its supervisor over one AF_UNIX SOCK_SEQPACKET socket
(message boundaries kept, so no framing): it sends ``ready`` once it serves,
``fail <why>`` if it cannot, and ``n <adopted> <active>`` whenever its count of
live connections changes; under the reactor architecture it receives accepted
sockets on it (SCM_RIGHTS) and adopts them.  End of file on it means the
supervisor is gone, and the worker stops rather than serve on unsupervised.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

from railcar.engine.api import (
    Conn,
    DatagramHandler,
    DatagramOptions,
    Handler,
    Server,
    ServerOptions,
    Service,
)
from railcar.engine.stop_latch import StopLatch
from railcar.procs import pin
from railcar.workers.settings import Architecture, server_for

log = logging.getLogger("railcar.workers")

#: How often a worker resends a count report the supervisor had no room for.
REPORT_RETRY = 0.1
#: Accepted sockets read from the supervisor per receive (one descriptor per message).
MESSAGE_SIZE = 64


@dataclass(frozen=True)
class WorkerSpec:
    """What every worker of a supervisor runs: the handler it builds, on which engine, listening how."""

    handler_factory: Callable[[], Handler | DatagramHandler]
    engine: str | None
    architecture: Architecture
    options: ServerOptions | DatagramOptions
    deadline: float
    started: Callable[[Server], None] | None = None


class Counter:
    """The worker's adopted and live connections, reported to the supervisor on every change.

    Reports carry absolute numbers, so one that finds the socket full can be dropped
    and resent later (``flush``); the lock keeps them in order across engine threads.
    """

    def __init__(self, chan: socket.socket) -> None:
        self.chan = chan
        self.adopted = 0
        self.active = 0
        self.dirty = False
        self._lock = threading.Lock()

    def change(self, adopted: int = 0, active: int = 0) -> None:
        """Add to the counts and report them."""
        with self._lock:
            self.adopted += adopted
            self.active += active
            self._send()

    def flush(self) -> None:
        """Resend the counts if the last report found no room."""
        with self._lock:
            if self.dirty:
                self._send()

    def _send(self) -> None:
        try:
            self.chan.send(b"n %d %d" % (self.adopted, self.active), socket.MSG_DONTWAIT)
        except BlockingIOError:
            self.dirty = True
        except OSError:
            self.dirty = False  # the supervisor is gone; the receiver stops the worker
        else:
            self.dirty = False


def count_connections(handler: Handler, counter: Counter) -> None:
    """Make ``handler`` count its opens and closes into ``counter``, at no cost to its data callbacks.

    Its class becomes a subclass of its own made here (same layout, ``__slots__ = ()``):
    unlike a wrapper it stays an instance of its class (``wait_for_startup`` and the like
    look it up with isinstance), and the engines call its other callbacks directly.
    """
    base = type(handler)

    def on_open(self: Handler, conn: Conn) -> None:
        counter.change(active=1)
        base.on_open(self, conn)

    def on_close(self: Handler, conn: Conn, exc: BaseException | None) -> None:
        try:
            base.on_close(self, conn, exc)
        finally:
            counter.change(active=-1)

    namespace = {"__slots__": (), "on_open": on_open, "on_close": on_close}
    handler.__class__ = type(f"Counted{base.__name__}", (base,), namespace)


def worker_main(
    spec: WorkerSpec, index: int, cpu: int | None, chan: socket.socket, inherited: list[socket.socket]
) -> None:
    """Serve as worker ``index`` until SIGTERM (a second one aborts the flush) or the supervisor's end."""
    for sock in inherited:
        sock.close()  # the supervisor's: held here, they would outlive it (a listener would keep listening)
    stop = StopLatch()
    running: list[Service] = []

    def on_term(signum: int, frame: object) -> None:
        if stop.requests and running:
            running[0].abort_stop()
        else:  # tell the supervisor this exit is a stop, should the SIGTERM not be its own
            with contextlib.suppress(OSError):
                chan.send(b"stopping", socket.MSG_DONTWAIT)
        stop.request()

    # Ctrl-C reaches the whole process group: the supervisor alone decides, and sends SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, on_term)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # blocked by the supervisor around fork
    if cpu is not None:
        pin(0, {cpu})
    counter = Counter(chan)
    try:
        handler = spec.handler_factory()
        if isinstance(handler, Handler) and isinstance(spec.options, ServerOptions):
            count_connections(handler, counter)
        server = server_for(handler, spec.engine, _options(spec))
        server.start()
        if spec.started is not None and isinstance(server, Server):
            try:
                spec.started(server)
            except BaseException:
                server.stop(spec.deadline)
                raise
    except Exception as exc:  # noqa: BLE001 - whatever it is, the supervisor reports it
        with contextlib.suppress(OSError):
            chan.send(f"fail {type(exc).__name__}: {exc}".encode(errors="replace")[:4000])
        sys.exit(1)
    running.append(server)
    chan.send(b"ready")
    threading.Thread(
        target=_receive, args=(chan, server, counter, stop), name=f"railcar-worker-{index}", daemon=True
    ).start()
    try:
        while not stop.wait(REPORT_RETRY):
            counter.flush()
    finally:
        server.stop(spec.deadline)
        close = getattr(handler, "close", None)
        if callable(close):
            close()


def _options(spec: WorkerSpec) -> ServerOptions | DatagramOptions:
    if spec.architecture == "sharding" or isinstance(spec.options, DatagramOptions):
        return spec.options
    # A reactor worker only adopts; engines need a listener, so it gets one nobody knows:
    # an abstract Unix socket the kernel names (bind to "").
    private = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    private.bind("")
    private.listen(1)
    return dataclasses.replace(spec.options, host="", port=0, unix=None, reuse_port=False, sock=private)


def _receive(chan: socket.socket, server: Service, counter: Counter, stop: StopLatch) -> None:
    """Adopt the sockets the acceptor sends until the supervisor closes its end (or dies)."""
    try:
        while True:
            message, fds, _, _ = socket.recv_fds(chan, MESSAGE_SIZE, 1)
            if not message:
                break
            for fd in fds:
                _adopt(server, socket.socket(fileno=fd))
            if fds:
                counter.change(adopted=len(fds))
    except OSError as exc:
        log.warning("lost the supervisor's socket (%s); stopping", exc)
    stop.request()


def _adopt(server: Service, sock: socket.socket) -> None:
    if not isinstance(server, Server):  # a datagram server: sharding only, so none are ever sent
        sock.close()
        return
    try:
        server.adopt(sock)
    except (RuntimeError, ValueError) as exc:
        log.debug("closing a passed connection (%s)", exc)  # stopping, or the client already left
        sock.close()
