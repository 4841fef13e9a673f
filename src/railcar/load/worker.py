"""One process of ``railcar load``: many connections on one event loop, latencies in an HDR histogram.

The parent sends ``("go", start)`` once every worker has connected its users and
``("stop",)`` to end early; the worker sends ``("ready", connected, error)``, then
a ``("tick", bin, ...)`` every ``TICK`` seconds from the start with its counters and
the histogram of the replies since the previous tick, and a last tick followed by
``("done", max_rss, loaded_s)`` (``loaded_s``: how long it loaded the server, without
the drain that follows). ``bin`` numbers the ticks from 0: the replies a tick reports
belong to that bin of the run's time series and to no other.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import resource
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Final, cast

from railcar.errors import ProtocolError
from railcar.load.latency import LatencyLog
from railcar.load.plan import FAILURE_KINDS, TICK, TIMER_RESOLUTION, Plan, new_histogram
from railcar.load.workloads import SEQUENCE, DatagramEchoSession, Session

# Lateness within the event loop's timer resolution is the generator's own, not a stalled server's.
TIMER_SLACK_NS: Final = round(TIMER_RESOLUTION * 1e9)
# Open loop: batches a connection may have in flight before it waits for replies.
MAX_IN_FLIGHT_BATCHES: Final = 1024
RETRY_DELAY: Final = 0.05
CONNECTS_AT_ONCE: Final = 64


@dataclass
class Counters:
    """What one worker has counted so far."""

    sent: int = 0
    received: int = 0
    failures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAILURE_KINDS, 0))


class User(asyncio.Protocol):
    """One connection: sends batches of ``pipeline`` requests, checks and times the replies."""

    def __init__(self, load: Load, index: int) -> None:
        self.load = load
        self.index = index
        self.session: Session = load.plan.workload.session(index)
        self.transport: asyncio.Transport | None = None
        # (start time in ns, requests of that batch not yet answered), oldest first
        self.pending: collections.deque[tuple[int, int]] = collections.deque()
        self.in_flight = 0
        self.next_due = 0
        self.blocked = False
        self.paused = False  # the transport's buffer is over its high-water mark
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport; start sending if the run has begun."""
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        # Registered here, not when create_connection returns, so that requests sent
        # from here on are seen by the end-of-run accounting.
        self.load.users[self.index] = self
        if self.load.running:
            self.start()

    def start(self) -> None:
        """Begin sending: a first batch (closed loop) or the first scheduled one (open loop)."""
        load = self.load
        if load.period_ns:
            now = time.perf_counter_ns()
            self.next_due = max(self.next_due, now + load.phase_ns(self.index))
            self.fire()
        else:
            self.send()

    def send(self, due_ns: int | None = None) -> None:
        """Queue one batch, timed from when it is written (or, open loop, from when it was due)."""
        count = self.load.pipeline
        data = self.session.requests(count)
        self.in_flight += count
        self.load.counters.sent += count
        self.load.queue_write(self, data, count, due_ns)

    def fire(self) -> None:
        """Open loop: send every batch now due, timed from when it was due; schedule the next."""
        self.timer = None
        load = self.load
        if not load.running or self.transport is None or self.session.closing:
            return
        now = time.perf_counter_ns()
        due, period, limit = self.next_due, load.period_ns, load.max_in_flight
        while due <= now:
            if self.in_flight >= limit or self.paused:
                self.blocked = True
                break
            self.send(due)
            due += period
        self.next_due = due
        if not self.blocked:
            self.timer = load.loop.call_later((due - now) / 1e9, self.fire)

    def data_received(self, data: bytes) -> None:
        """Check the replies; record their latency; send the next batch when the loop calls for it."""
        now = time.perf_counter_ns()
        try:
            done, failed = self.session.feed(data)
        except ProtocolError:
            self.fail("mismatch")
            return
        if done:
            self.complete(done, failed, now)

    def complete(self, done: int, failed: int, now: int) -> None:
        """Account for ``done`` replies received at ``now``, ``failed`` of them failures."""
        load = self.load
        counters = load.counters
        if done > self.in_flight:
            self.fail("mismatch")
            return
        counters.received += done - failed
        if failed:
            counters.failures[self.session.failure_kind] += failed
        self.in_flight -= done
        pending, record = self.pending, load.latencies.record
        while done:
            start, count = pending[0]
            taken = min(count, done)
            record(now - start, taken)
            if taken == count:
                pending.popleft()
            else:
                pending[0] = (start, count - taken)
            done -= taken
        self.advance()

    def advance(self) -> None:
        """Replies came (or were given up on): send what the loop calls for now."""
        load = self.load
        if self.blocked:  # open loop at its in-flight limit: room again
            self.blocked = False
            self.fire()
        if self.in_flight:
            return
        if not load.running:
            load.settled()
        elif self.session.closing:
            self.close()
        elif load.period_ns:
            return  # the schedule sends the next batch
        elif load.interval:
            self.timer = load.loop.call_later(load.interval, self.resume)
        else:
            self.send()

    def transmit(self, data: bytes, count: int, start: int) -> None:
        """Write a batch of ``count`` requests, timed from ``start`` (ns)."""
        self.pending.append((start, count))
        self.transport.write(data)  # type: ignore[union-attr]

    def expire(self, oldest: int) -> None:
        """Fail the connection if its oldest request was sent before ``oldest`` (ns)."""
        if self.pending and self.pending[0][0] < oldest:
            self.fail("timeout")

    def settle(self, oldest: int) -> None:
        """At the end of the run: count what is still owed as unanswered."""
        self.load.counters.failures["unanswered"] += self.in_flight
        self.in_flight = 0

    def resume(self) -> None:
        """Closed loop with an interval: the pause after a reply is over."""
        self.timer = None
        if self.load.running and self.transport is not None:
            self.send()

    def fail(self, kind: str) -> None:
        """Count every request in flight as failed for ``kind`` and drop the connection."""
        self.load.counters.failures[kind] += self.in_flight
        self.in_flight = 0
        self.pending.clear()
        if self.transport is not None:
            self.transport.abort()
        self.load.settled()

    def close(self) -> None:
        """Stop this connection's timer and close it."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.close()

    def pause_writing(self) -> None:
        """The server reads slower than the schedule: hold what falls due, timed from when it was due."""
        self.paused = True

    def resume_writing(self) -> None:
        """The server caught up: send what fell due meanwhile."""
        self.paused = False
        if self.blocked:
            self.blocked = False
            self.fire()

    def eof_received(self) -> bool:
        """The server closed its side: no more replies will come."""
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """Replies still owed are failures (or complete a response delimited by the close); reconnect."""
        self.transport = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.in_flight:
            try:
                done, failed = self.session.eof()
            except ProtocolError:
                done, failed = 0, 0
            if done:
                self.complete(done, failed, time.perf_counter_ns())
            if self.in_flight:
                self.fail("reset")
        self.load.lost(self, clean=exc is None and self.session.closing)


class DatagramUser(User):
    """One UDP socket connected to the server: numbered datagrams, each timed until its echo or its loss.

    A datagram unanswered after ``--timeout`` is counted ``lost`` (checked every tick)
    and the user goes on, unlike a connection, which a timeout ends.
    """

    def __init__(self, load: Load, index: int) -> None:
        super().__init__(load, index)
        self.datagrams = cast(DatagramEchoSession, self.session)
        # sequence number -> send time (ns), in the order sent
        self.owed: dict[int, int] = {}

    def transmit(self, data: bytes, count: int, start: int) -> None:
        """Send ``count`` datagrams, each timed from ``start`` (ns)."""
        transport = cast(asyncio.DatagramTransport, self.transport)
        sendto, owed, size = transport.sendto, self.owed, self.datagrams.size
        unpack = SEQUENCE.unpack_from
        with memoryview(data) as view:
            for offset in range(0, count * size, size):
                owed[unpack(view, offset)[0]] = start
                sendto(view[offset : offset + size].tobytes())

    def datagram_received(self, data: bytes, addr: object) -> None:
        """Match the echo to the datagram it answers and time it; a wrong echo is a mismatch.

        A reply that answers no datagram still owed (a duplicate, one later than the
        timeout, garbage) is not a request's outcome and is ignored.
        """
        now = time.perf_counter_ns()
        load = self.load
        seq, good = self.datagrams.check(data)
        start = self.owed.pop(seq, None)
        if start is None:
            return
        self.in_flight -= 1
        if good:
            load.counters.received += 1
            load.latencies.record(now - start, 1)
        else:
            load.counters.failures["mismatch"] += 1
        self.advance()

    def error_received(self, exc: Exception) -> None:
        """An ICMP error (nothing listens there, say): the datagrams it concerns will count as lost."""

    def expire(self, oldest: int) -> None:
        """Count the datagrams sent before ``oldest`` (ns) and still unanswered as lost."""
        owed = self.owed
        lost = 0
        for start in owed.values():
            if start >= oldest:
                break
            lost += 1
        if not lost:
            return
        for seq in list(itertools.islice(owed, lost)):
            del owed[seq]
        self.in_flight -= lost
        self.load.counters.failures["lost"] += lost
        self.advance()

    def settle(self, oldest: int) -> None:
        """At the end of the run: datagrams owed since before ``oldest`` are lost, the rest unanswered."""
        self.expire(oldest)
        super().settle(oldest)
        self.owed.clear()


class Load:
    """The users of one worker process and what they have measured."""

    def __init__(self, plan: Plan, parent: Connection, loop: asyncio.AbstractEventLoop) -> None:
        self.plan = plan
        self.parent = parent
        self.loop = loop
        self.pipeline = plan.pipeline
        self.interval = plan.interval
        self.period_ns = int(plan.users * plan.pipeline / plan.rate * 1e9) if plan.rate else 0
        self.max_in_flight = MAX_IN_FLIGHT_BATCHES * plan.pipeline
        self.counters = Counters()
        self.latencies = LatencyLog()
        self.outbox: list[tuple[User, bytes, int, int | None]] = []
        self.users: dict[int, User] = {}
        self.running = False
        self.started = 0.0
        self.finished = asyncio.Event()
        self.stop_requested = asyncio.Event()
        self.go = asyncio.Event()
        self.start_at = 0.0
        self.bin = 0  # the time-series bin the replies since the last tick belong to
        self.loaded = 0.0  # seconds from the start to the end of sending (the drain not included)

    def queue_write(self, user: User, data: bytes, count: int, due_ns: int | None) -> None:
        """Write ``data`` once this turn of the loop has read everything that is ready.

        Writing the requests of a turn back to back (as wrk does) finds the server
        awake for all but the first; writing each as its reply is read makes the
        server sleep and wake up once per request, which costs more than the write.
        """
        if not self.outbox:
            self.loop.call_soon(self.flush)
        self.outbox.append((user, data, count, due_ns))

    def flush(self) -> None:
        """Write what this turn of the loop queued, to connections still open, and start their clocks.

        A batch is timed from its write, so the wait in this queue is not charged to the
        server; in the open loop, from when it was due if that was longer ago than the
        timer's resolution (the server kept the generator waiting).
        """
        outbox, self.outbox = self.outbox, []
        now = time.perf_counter_ns()
        for user, data, count, due in outbox:
            transport = user.transport
            if transport is None or transport.is_closing():
                continue  # failed meanwhile; its requests were counted as failures then
            user.transmit(data, count, due if due is not None and now - due > TIMER_SLACK_NS else now)

    def phase_ns(self, index: int) -> int:
        """Spread the open-loop schedules of this worker's users evenly over one period."""
        return (index - self.plan.first_user) * self.period_ns // max(self.plan.users, 1)

    async def connect(self, index: int) -> BaseException | None:
        """Open connection ``index``; return the error if it fails (counted as a connect failure)."""
        plan = self.plan
        try:
            async with asyncio.timeout(plan.connect_timeout):
                if plan.workload.datagrams:
                    await self.loop.create_datagram_endpoint(
                        lambda: DatagramUser(self, index), remote_addr=(plan.host, plan.port)
                    )
                else:
                    await self.loop.create_connection(lambda: User(self, index), plan.host, plan.port)
        except (OSError, TimeoutError) as exc:
            self.counters.failures["connect"] += 1
            return exc
        return None

    def lost(self, user: User, clean: bool) -> None:
        """A connection ended: while running, replace it (at once after a clean close, else shortly)."""
        if self.users.get(user.index) is user:
            del self.users[user.index]
        if self.running:
            self.loop.call_later(0 if clean else RETRY_DELAY, self.reconnect, user.index)

    def reconnect(self, index: int) -> None:
        """Start reconnecting user ``index`` (retried while the run lasts)."""
        if self.running and index not in self.users:
            self.loop.create_task(self._reconnect(index))

    async def _reconnect(self, index: int) -> None:
        if await self.connect(index) is not None and self.running:
            self.loop.call_later(RETRY_DELAY, self.reconnect, index)

    def settled(self) -> None:
        """After the run: finish once no connection has requests in flight."""
        if not self.running and not any(user.in_flight for user in self.users.values()):
            self.finished.set()

    def tick(self) -> None:
        """Send the counters and the histogram of the replies since the last tick to the parent."""
        counters = self.counters
        encoded = b""
        if len(self.latencies):
            # a fresh histogram: reset() zeroes its 31,744 counts one by one in Python (2–3 ms)
            histogram = new_histogram()
            self.latencies.fold_into(histogram)
            encoded = histogram.encode()
        self.parent.send(
            (
                "tick",
                self.bin,
                time.perf_counter() - self.started,
                counters.sent,
                counters.received,
                dict(counters.failures),
                encoded,
            )
        )

    def on_parent_message(self) -> None:
        """Handle ``go`` and ``stop`` from the parent (or its exit)."""
        try:
            message: tuple[Any, ...] = self.parent.recv()
        except EOFError:
            message = ("stop",)
        if message[0] == "go":
            self.start_at = message[1]
            self.go.set()
        else:
            self.stop_requested.set()
            self.go.set()

    async def run(self) -> None:
        """Connect the users, wait for ``go``, load the server for the duration, drain, report."""
        plan = self.plan
        self.loop.add_reader(self.parent.fileno(), self.on_parent_message)
        gate = asyncio.Semaphore(CONNECTS_AT_ONCE)

        async def connect_one(index: int) -> BaseException | None:
            async with gate:
                return await self.connect(index)

        errors = await asyncio.gather(
            *(connect_one(index) for index in range(plan.first_user, plan.first_user + plan.users))
        )
        first_error = next((str(error) or type(error).__name__ for error in errors if error), "")
        self.parent.send(("ready", len(self.users), first_error))
        await self.go.wait()
        if self.stop_requested.is_set():
            self.started = time.perf_counter()  # nothing was loaded: the last tick says 0 s
            await self.finish()
            return
        await asyncio.sleep(max(0.0, self.start_at - time.perf_counter()))
        self.started = time.perf_counter()
        self.running = True
        for user in list(self.users.values()):
            user.start()
        for index in range(plan.first_user, plan.first_user + plan.users):
            if index not in self.users:
                self.reconnect(index)
        ticker = self.loop.create_task(self.keep_ticking())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(plan.duration):
                await self.stop_requested.wait()
        self.running = False
        self.loaded = time.perf_counter() - self.started
        for user in self.users.values():
            if user.timer is not None:
                user.timer.cancel()
                user.timer = None
        self.settled()
        grace = 0.2 if self.stop_requested.is_set() else plan.grace
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self.finished.wait()
        ticker.cancel()
        # Less the timer's slack: the grace (as long as the timeout) may end a little early.
        oldest = time.perf_counter_ns() - int(plan.timeout * 1e9) + TIMER_SLACK_NS
        for user in self.users.values():
            user.settle(oldest)
        await self.finish()

    async def keep_ticking(self) -> None:
        """Tick every ``TICK`` seconds from the start and fail requests older than the timeout.

        Ticks are due at fixed times from the start, not ``TICK`` after the previous
        one, so the bins of every worker stay aligned however late a tick runs.
        """
        timeout_ns = int(self.plan.timeout * 1e9)
        while True:
            await asyncio.sleep(self.started + (self.bin + 1) * TICK - time.perf_counter())
            self.tick()
            self.bin += 1
            oldest = time.perf_counter_ns() - timeout_ns
            for user in list(self.users.values()):
                user.expire(oldest)

    async def finish(self) -> None:
        """Close every connection and send the last tick and the process's peak memory."""
        self.loop.remove_reader(self.parent.fileno())
        for user in list(self.users.values()):
            user.close()
        self.tick()
        self.parent.send(("done", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, self.loaded))


def main(plan: Plan, parent: Connection) -> None:
    """Entry point of a worker process (uvloop where installed); SIGINT is left to the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    run: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
    with contextlib.suppress(ImportError):  # without uvloop the stdlib loop serves, more slowly
        import uvloop  # noqa: PLC0415

        run = uvloop.run
    try:
        run(_main(plan, parent))
    finally:
        parent.close()


async def _main(plan: Plan, parent: Connection) -> None:
    await Load(plan, parent, asyncio.get_running_loop()).run()
