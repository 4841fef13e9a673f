"""The supervisor: forks the workers, restarts the dead ones, and (reactor) accepts for them.

One thread runs everything the supervisor does, around one selector: the workers'
sockets (readiness and connection counts), their process sentinels (deaths), the
listener under the reactor architecture (accept, choose a worker, pass the socket
with SCM_RIGHTS), and a wake-up socket for stop requests.  Being single-threaded
is what makes forking a restarted worker safe: no other supervisor thread can hold
a lock at that moment.

A worker that dies is restarted after a delay that doubles with each death in a
row of that worker (0.1 s up to 5 s); a worker that lived ``healthy_after`` seconds
starts the count afresh.  When ``max_deaths`` workers die in a row, each within
``healthy_after`` seconds of its start, the supervisor gives up: it stops the rest
and ``wait``/``serve_forever`` raise WorkersFailed.  A dead worker takes only its
own connections with it (and, reactor, the sockets passed to it but not yet adopted).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import multiprocessing
import os
import selectors
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any, Final

from railcar.engine import datagram_server_class, server_class
from railcar.engine.api import Address, DatagramHandler, DatagramOptions, Handler, Server, ServerOptions
from railcar.engine.listen import describe, listen
from railcar.errors import BindError, WorkersFailed, WorkerStartError
from railcar.procs import cpu_of
from railcar.workers.balance import Balance, policy
from railcar.workers.child import WorkerSpec, worker_main
from railcar.workers.settings import Architecture, Restarts, check_settings

log = logging.getLogger("railcar.workers")

#: Seconds a stopping worker gets beyond the flush deadline before it is killed.
STOP_GRACE: Final = 2.0
#: Connections the acceptor takes per readiness event before it looks at its workers again.
ACCEPT_BATCH: Final = 64
#: How long accepting rests after an accept error such as EMFILE (instead of spinning on it).
ACCEPT_PAUSE: Final = 0.1
_STOP_SIGNALS: Final = frozenset({signal.SIGTERM, signal.SIGINT})


@dataclass(eq=False)
class _Slot:
    """One worker position: the process in it now, its socket, and what it reported."""

    index: int
    process: BaseProcess | None = None
    chan: socket.socket | None = None
    ready: bool = False  # taking connections now
    served: bool = False  # said it was ready at some point in this process's life
    started: float = 0.0
    deaths: int = 0  # in a row, each soon after its start
    restart_at: float | None = None
    failure: str = ""  # what the worker said when it could not start
    signalled: bool = False  # said it got SIGTERM (from the supervisor, or from outside)
    sent: int = 0  # sockets passed to this process
    adopted: int = 0  # of which it reported adopting
    active: int = 0  # live connections it reported

    @property
    def load(self) -> int | None:
        """Live connections, counting the sockets passed but not yet adopted; None unless ready."""
        if not self.ready:
            return None
        return self.active + max(0, self.sent - self.adopted)


class Supervisor:
    """``workers`` processes serving the handlers ``handler_factory`` builds, kept alive; see the module."""

    def __init__(
        self,
        handler_factory: Callable[[], Handler | DatagramHandler],
        *,
        workers: int,
        architecture: str = "sharding",
        balance: str | None = None,
        engine: str | None = None,
        cpu_affinity: bool = True,
        deadline: float = 5.0,
        restarts: Restarts | None = None,
        started: Callable[[Server], None] | None = None,
        datagrams: bool = False,
        **options: Any,
    ) -> None:
        """Check the settings; raises ValueError for bad ones (see ``check_settings``, the options).

        ``datagrams``: the factory makes DatagramHandlers and ``options`` are DatagramOptions fields.
        """
        self.options: ServerOptions | DatagramOptions = (
            DatagramOptions(**options) if datagrams else ServerOptions(**options)
        )
        arch, chosen = check_settings(workers, architecture, balance, self.options)
        self.architecture: Architecture = arch
        self.balance: Balance = chosen
        # An unknown engine (or one without datagrams) fails here, not in N workers.
        self.engine = (datagram_server_class if datagrams else server_class)(engine).engine
        self.cpu_affinity = cpu_affinity
        self.deadline = deadline
        self.restarts = restarts or Restarts()
        self._factory = handler_factory
        self._started = started
        self._slots = [_Slot(i) for i in range(workers)]
        self._policy = policy(chosen)
        self._context = multiprocessing.get_context("fork")  # the factory need not pickle
        self._lock = threading.Lock()
        self._selector: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._listener: socket.socket | None = None  # reactor: ours; sharding: the port's reservation
        self._accepting = False
        self._accept_resume = 0.0
        self._spec: WorkerSpec | None = None
        self._address: Address | None = None
        self._thread: threading.Thread | None = None
        self._stops_requested = 0
        self._stopping = False
        self._aborting = False
        self._kill_at = 0.0
        self._streak = 0
        self._failure: WorkersFailed | None = None
        self._done = threading.Event()

    # -- what callers see ------------------------------------------------------------------

    @property
    def address(self) -> Address:
        """The address clients connect to; raises RuntimeError before start."""
        if self._address is None:
            raise RuntimeError("supervisor is not started")
        return self._address

    @property
    def port(self) -> int:
        """The TCP port clients connect to (0 for a Unix socket); raises RuntimeError before start."""
        address = self.address
        return 0 if isinstance(address, str) else int(address[1])

    @property
    def worker_pids(self) -> list[int | None]:
        """The pid of the process in each worker position (None while it is down)."""
        with self._lock:
            return [s.process.pid if s.process is not None and s.ready else None for s in self._slots]

    @property
    def active_connections(self) -> int:
        """Live connections over every worker, as they have reported them up to now."""
        with self._lock:
            for slot in self._slots:
                self._read_reports(slot)
            return sum(slot.active for slot in self._slots if slot.process is not None)

    @property
    def running(self) -> bool:
        """True from a successful ``start`` until the supervisor has stopped every worker."""
        return self._thread is not None and not self._done.is_set()

    def start(self, timeout: float = 30.0) -> None:
        """Listen, start every worker and wait until each serves; raises BindError or WorkerStartError."""
        if self._thread is not None:
            raise RuntimeError("supervisor already started")
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        if self._stops_requested:  # a signal before there was anything to wake
            self._wake_w.send(b"s")
        try:
            self._listen()
            for slot in self._slots:
                self._spawn(slot)
            self._await_ready(timeout)
        except BaseException:
            self._kill_all("the start failed")
            self._close()
            raise
        if self.architecture == "reactor":
            self._accept(True)
        if isinstance(self.options, DatagramOptions) and self._listener is not None:
            # A bound UDP socket in the SO_REUSEPORT group gets its share of the datagrams:
            # the port's reservation goes once the workers hold it (and keep it while one lives).
            self._listener.close()
            self._listener = None
        self._thread = threading.Thread(target=self._run, name="railcar-supervisor", daemon=True)
        self._thread.start()
        log.info(
            "%d workers (engine %s, %s) serve %s",
            len(self._slots),
            self.engine,
            self.architecture,
            describe(self.address),
        )

    def stop(self, deadline: float | None = None) -> None:
        """Stop every worker gracefully (SIGTERM) within ``deadline`` s, kill what remains, then return.

        A second call while stopping tells the workers to abort their flush at once.
        """
        if self._thread is None:
            return
        if deadline is not None:
            self.deadline = deadline
        self.request_stop()
        self._thread.join()

    def request_stop(self) -> None:
        """Begin stopping without waiting; safe from a signal handler or any thread."""
        self._stops_requested += 1
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"s")

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the supervisor has stopped; False on timeout. Raises WorkersFailed if it gave up."""
        if not self._done.wait(timeout):
            return False
        if self._failure is not None:
            raise self._failure
        return True

    def serve_forever(self, ready: Callable[[], None] | None = None) -> None:
        """Start, serve until SIGINT/SIGTERM, stop gracefully; main thread only.

        A second signal aborts the workers' flush.  Raises BindError, WorkerStartError,
        or WorkersFailed if the workers kept dying.
        """

        def on_signal(signum: int, frame: object) -> None:
            self.request_stop()

        previous = {sig: signal.signal(sig, on_signal) for sig in _STOP_SIGNALS}
        try:
            self.start()
            if ready is not None:
                ready()
            while not self.wait(3600):
                pass
        finally:
            try:
                self.stop()
            finally:
                for sig, old in previous.items():
                    signal.signal(sig, old)

    # -- starting ------------------------------------------------------------------------------

    def _listen(self) -> None:
        options = self.options
        if isinstance(options, DatagramOptions):
            if options.sock is not None:  # one worker: it serves the given socket
                self._address = options.sock.getsockname()
            else:
                self._listener = _reserve_port(options.host, options.port, socket.SOCK_DGRAM)
                self._address = self._listener.getsockname()
                options = dataclasses.replace(options, port=int(self._address[1]), reuse_port=True)
        elif self.architecture == "reactor":
            self._listener = listen(options)
            self._address = self._listener.getsockname()
        elif options.unix is not None or options.sock is not None:  # one worker: it listens itself
            self._address = options.unix if options.sock is None else options.sock.getsockname()
        else:
            self._listener = _reserve_port(options.host, options.port, socket.SOCK_STREAM)
            self._address = self._listener.getsockname()
            options = dataclasses.replace(options, port=int(self._address[1]), reuse_port=True)
        self._spec = WorkerSpec(
            self._factory, self.engine, self.architecture, options, self.deadline, self._started
        )

    def _spawn(self, slot: _Slot) -> None:
        """Fork the worker for ``slot``, its socket registered; the caller holds the lock or is alone.

        Raises OSError (no socket pair, no fork) with nothing left open.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._fork(slot, ours, theirs)
        except BaseException:
            ours.close()
            raise

    def _fork(self, slot: _Slot, ours: socket.socket, theirs: socket.socket) -> None:
        assert self._selector is not None
        assert self._spec is not None
        inherited = [s for s in self._parent_sockets() if s is not None] + [ours]
        cpu = cpu_of(slot.index) if self.cpu_affinity else None
        process = self._context.Process(
            target=worker_main,
            args=(self._spec, slot.index, cpu, theirs, inherited),
            name=f"railcar-worker-{slot.index}",
            daemon=True,
        )
        # Blocked across the fork: a SIGTERM before the worker has its own handler waits for it.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            theirs.close()
        ours.setblocking(False)
        slot.process, slot.chan = process, ours
        slot.ready, slot.served, slot.failure, slot.restart_at = False, False, "", None
        slot.signalled = False
        slot.started = time.monotonic()
        slot.sent = slot.adopted = slot.active = 0
        self._selector.register(ours, selectors.EVENT_READ, ("chan", slot))
        self._selector.register(process.sentinel, selectors.EVENT_READ, ("dead", slot))

    def _parent_sockets(self) -> list[socket.socket | None]:
        return [self._wake_r, self._wake_w, self._listener, *(slot.chan for slot in self._slots)]

    def _await_ready(self, timeout: float) -> None:
        give_up = time.monotonic() + timeout
        while not self._stopping and not all(slot.ready for slot in self._slots):
            left = give_up - time.monotonic()
            if self._failure is not None:
                raise self._failure
            if left <= 0:
                raise WorkerStartError(f"workers did not start serving within {timeout:g} s")
            self._turn(left, starting=True)

    # -- the supervisor's thread -----------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._finished():
                self._turn(self._timeout(), starting=False)
        except Exception as exc:
            log.exception("supervisor failed; killing the workers")
            self._kill_all("the supervisor failed")
            self._failure = WorkersFailed(f"the supervisor failed: {exc!r}")
        finally:
            self._close()
            self._done.set()

    def _finished(self) -> bool:
        return self._stopping and all(slot.process is None for slot in self._slots)

    def _timeout(self) -> float | None:
        now = time.monotonic()
        due = [slot.restart_at for slot in self._slots if slot.restart_at is not None]
        if self._stopping:
            due.append(self._kill_at)
        if self._accept_resume:
            due.append(self._accept_resume)
        return max(0.0, min(due) - now) if due else None

    def _turn(self, timeout: float | None, starting: bool) -> None:
        assert self._selector is not None
        events = self._selector.select(timeout)
        with self._lock:
            for key, _ in events:
                kind, slot = key.data
                if kind == "wake":
                    self._woken()
                elif kind == "chan":
                    self._read_reports(slot)
                elif kind == "dead":
                    self._died(slot, starting)
                elif kind == "listen":
                    self._accept_some()
            self._due(starting)

    def _due(self, starting: bool) -> None:
        now = time.monotonic()
        if self._stopping:
            if now >= self._kill_at:
                self._kill_all("it did not stop in time")
            return
        for slot in self._slots:
            if slot.restart_at is not None and now >= slot.restart_at:
                log.info("restarting worker %d", slot.index)
                try:
                    self._spawn(slot)
                except OSError as exc:  # fork or socketpair refused (EAGAIN, ENOMEM, EMFILE): later
                    delay = self.restarts.delay(slot.deaths)
                    log.warning(
                        "cannot restart worker %d (%s); trying again in %.1f s", slot.index, exc, delay
                    )
                    slot.restart_at = now + delay
        if self._accept_resume and now >= self._accept_resume:
            self._accept_resume = 0.0
            self._accept(True)

    def _woken(self) -> None:
        assert self._wake_r is not None
        with contextlib.suppress(BlockingIOError):
            self._wake_r.recv(4096)
        if self._stops_requested and not self._stopping:
            self._begin_stop()
        if self._stops_requested > 1 and not self._aborting:
            self._aborting = True
            self._signal_all(signal.SIGTERM)  # a second request: workers abort their flush

    def _begin_stop(self) -> None:
        self._stopping = True
        self._kill_at = time.monotonic() + self.deadline + STOP_GRACE
        self._accept(False)
        if self.architecture == "reactor" and self._listener is not None:
            self._listener.close()  # new clients are refused now, not left in the backlog
            self._listener = None
        for slot in self._slots:
            slot.restart_at = None
        self._signal_all(signal.SIGTERM)

    def _read_reports(self, slot: _Slot) -> None:
        """Take in every message the worker has sent so far (the lock is held)."""
        chan = slot.chan
        if chan is None:
            return
        while True:
            try:
                message = chan.recv(4096, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                message = b""
            if not message:  # the worker is gone; its sentinel tells the rest
                self._drop_chan(slot)
                return
            if message.startswith(b"n "):
                try:
                    _, adopted, active = message.split()
                    slot.adopted, slot.active = int(adopted), int(active)
                except ValueError:
                    log.warning("worker %d sent a malformed report %r", slot.index, message[:100])
            elif message == b"ready":
                slot.ready = slot.served = True
                if self.architecture == "reactor" and not self._stopping and not self._accept_resume:
                    self._accept(True)
            elif message.startswith(b"fail "):
                slot.failure = message[5:].decode(errors="replace")
            elif message == b"stopping":
                slot.signalled = True

    def _drop_chan(self, slot: _Slot) -> None:
        assert self._selector is not None
        if slot.chan is not None:
            self._selector.unregister(slot.chan)
            slot.chan.close()
            slot.chan = None
        slot.ready = False

    def _died(self, slot: _Slot, starting: bool) -> None:
        assert self._selector is not None
        assert slot.process is not None
        process = slot.process
        self._read_reports(slot)  # a "fail" it sent before exiting
        self._selector.unregister(process.sentinel)
        process.join()
        pid, exitcode = process.pid, process.exitcode
        process.close()
        self._drop_chan(slot)
        slot.process = None
        slot.active = 0
        how = _exit_text(exitcode, slot.failure)
        if starting and not slot.served and not self._stopping:
            raise WorkerStartError(f"worker {slot.index} could not start: {how}")
        if self._stopping:
            if exitcode:
                log.warning("worker %d (pid %s) %s while stopping", slot.index, pid, how)
            return
        if slot.signalled and exitcode == 0:
            # A SIGTERM the supervisor did not send, most often one sent to the whole process
            # group (Ctrl-C's kill, systemd, timeout) that reached the worker first: the
            # supervisor's own is about to stop everything.  Not a death; restarted quietly
            # if no stop follows.
            log.debug("worker %d (pid %s) stopped on a SIGTERM from outside", slot.index, pid)
            slot.restart_at = time.monotonic() + self.restarts.delay(1)
            return
        lived = time.monotonic() - slot.started
        if lived >= self.restarts.healthy_after:
            slot.deaths = 0
            self._streak = 0
        slot.deaths += 1
        self._streak += 1
        if self._streak >= self.restarts.max_deaths:
            self._failure = WorkersFailed(
                f"workers died {self._streak} times in a row, none living "
                f"{self.restarts.healthy_after:g} s; the last: worker {slot.index} {how}"
            )
            log.error("%s; stopping", self._failure)
            self._begin_stop()
            return
        delay = self.restarts.delay(slot.deaths)
        log.warning(
            "worker %d (pid %s) %s after %.1f s; restarting it in %.1f s",
            *(slot.index, pid, how, lived, delay),
        )
        slot.restart_at = time.monotonic() + delay

    def _signal_all(self, signum: signal.Signals) -> None:
        for slot in self._slots:
            if slot.process is not None and slot.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.process.pid, signum)

    def _kill_all(self, why: str) -> None:
        """Kill and reap every worker still running (a stop past its deadline, or a failed start)."""
        for slot in self._slots:
            process = slot.process
            if process is None:
                continue
            if process.is_alive():
                log.warning("killing worker %d (pid %s): %s", slot.index, process.pid, why)
                process.kill()
            process.join()
            if self._selector is not None:
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(process.sentinel)
            process.close()
            self._drop_chan(slot)
            slot.process = None

    def _close(self) -> None:
        for sock in (self._listener, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        if self._selector is not None:
            self._selector.close()

    # -- the reactor's acceptor ------------------------------------------------------------

    def _accept(self, on: bool) -> None:
        """Watch the listener (reactor only) while a worker is ready, or stop watching it."""
        if self.architecture != "reactor" or self._selector is None or self._listener is None:
            return
        on = on and not self._stopping and any(slot.ready for slot in self._slots)
        if on and not self._accepting:
            self._selector.register(self._listener, selectors.EVENT_READ, ("listen", None))
        elif not on and self._accepting:
            self._selector.unregister(self._listener)
        self._accepting = on

    def _accept_some(self) -> None:
        assert self._listener is not None
        for _ in range(ACCEPT_BATCH):
            try:
                conn, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                log.warning("cannot accept (%s); pausing for %d ms", exc.strerror, ACCEPT_PAUSE * 1000)
                self._accept(False)
                self._accept_resume = time.monotonic() + ACCEPT_PAUSE
                return
            with conn:
                if not self._pass(conn, peer):
                    return

    def _pass(self, conn: socket.socket, peer: Any) -> bool:
        """Pass ``conn`` to the worker the policy picks (another if that one's queue is full).

        Returns False once no worker is ready: accepting pauses and connections wait in the
        backlog.  A connection no ready worker can take now is closed and logged.
        """
        client = str(peer[0]) if isinstance(peer, tuple) else ""
        loads = [slot.load for slot in self._slots]
        for _ in self._slots:
            try:
                index = self._policy.choose(client, loads)
            except LookupError:
                break
            slot = self._slots[index]
            assert slot.chan is not None
            try:
                socket.send_fds(slot.chan, [b"c"], [conn.fileno()], socket.MSG_DONTWAIT)
            except BlockingIOError:
                loads[index] = None  # its queue of sockets is full: try another
                continue
            except OSError as exc:
                log.warning("cannot pass a connection to worker %d (%s)", index, exc)
                if exc.errno in _WORKER_GONE:  # dying: its sentinel will say so; meanwhile it gets nothing
                    slot.ready = False
                loads[index] = None  # another error (ENOBUFS, ENOMEM) costs it this connection only
                continue
            slot.sent += 1
            return True
        if not any(slot.ready for slot in self._slots):
            self._accept(False)
            return False
        log.warning("no worker can take a connection now; closing it")
        return True


#: send_fds errors that mean the worker's end of its socket is gone.
_WORKER_GONE = frozenset({errno.EPIPE, errno.ECONNRESET, errno.ECONNREFUSED, errno.ENOTCONN})


def _reserve_port(host: str, port: int, sock_type: socket.SocketKind) -> socket.socket:
    """Bind (without listening) the port every sharding worker will bind too; raises BindError.

    It names the port when ``port`` is 0.  A TCP reservation is held for the supervisor's
    life, keeping the port ours while workers restart (a bound socket that does not listen
    gets no connections); a UDP one only until the workers serve (see ``start``).
    """
    where = describe((host, port))
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            host, port, type=sock_type, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise BindError(f"cannot listen on {where}: unknown host ({exc.strerror})") from exc
    sock = socket.socket(family, kind, proto)
    try:
        if port:
            # Bound with SO_REUSEPORT alone, the port would join any group of the same user
            # already on it (another service): the kernel would split the clients between them.
            with socket.socket(family, kind, proto) as probe:
                if sock_type == socket.SOCK_STREAM:  # a port in TIME_WAIT is free to listen on
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(sockaddr)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
    except OSError as exc:
        sock.close()
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise BindError(f"cannot listen on {where}: {reason}") from exc
    return sock


def _exit_text(exitcode: int | None, failure: str) -> str:
    if exitcode is not None and exitcode < 0:
        text = f"was killed by {signal.Signals(-exitcode).name}"
    else:
        text = f"exited with status {exitcode}"
    return f"{text}: {failure}" if failure else text
