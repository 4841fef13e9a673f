"""The parent of ``railcar load``: spreads users over worker processes, merges what they measure."""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from typing import Any, Final

from hdrh.histogram import HdrHistogram

from railcar.errors import RailcarError
from railcar.limits import raise_open_file_limit
from railcar.load.plan import (
    FAILURE_KINDS,
    MIN_RATE_WINDOW,
    TICK,
    TIMER_RESOLUTION,
    Plan,
    new_histogram,
    request_failures,
)
from railcar.load.target import TargetUnreachable
from railcar.procs import reap

# Open files a worker needs besides its connections (pipes, epoll, stdio, imports).
FILES_PER_WORKER: Final = 64
READY_TIMEOUT_PER_USER: Final = 0.05
STOP_TIMEOUT: Final = 10.0


@dataclass(frozen=True)
class Progress:
    """Totals so far, for a live progress line."""

    elapsed: float
    sent: int
    received: int
    failures: int
    rate: float
    p99_us: float


@dataclass(frozen=True)
class Sample:
    """One bin of the run's time series: the good replies the workers counted in it, and their latency."""

    t: float  # start of the bin, in seconds from the start of the load
    seconds: float  # its length: ``TICK``, or less for the last bin
    replies: int
    p50_us: float | None  # None when no reply was timed in the bin
    p99_us: float | None

    @property
    def rate(self) -> float:
        """Good replies per second in this bin."""
        return self.replies / self.seconds if self.seconds > 0 else 0.0


LATENCY_FIELDS: Final = ("min", "avg", "p50", "p90", "p95", "p99", "p999", "max")


@dataclass
class LoadResult:
    """What a load run measured."""

    plan: Plan
    procs: int
    connected: int = 0
    sent: int = 0
    received: int = 0
    failure_kinds: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAILURE_KINDS, 0))
    elapsed: float = 0.0
    histogram: HdrHistogram = field(default_factory=new_histogram)
    series: list[Sample] = field(default_factory=list)
    generator_rss: int = 0
    interrupted: bool = False
    # how long the workers sent requests; ``elapsed`` also covers the wait for the last replies
    loaded: float = 0.0

    @property
    def failures(self) -> int:
        """Requests that got no good reply (so ``sent == received + failures``)."""
        return request_failures(self.failure_kinds)

    @property
    def errors(self) -> int:
        """Failures of every kind: the failed requests and the failed connects."""
        return self.failures + self.failure_kinds["connect"]

    @property
    def throughput(self) -> float | None:
        """Good replies per second while the load ran; None when it ran under ``MIN_RATE_WINDOW``.

        The drain of the last replies is not counted: a server that leaves a request
        unanswered at the end makes it last up to the grace period, and dividing by it
        would understate the throughput severalfold.
        """
        if self.loaded < MIN_RATE_WINDOW - TIMER_RESOLUTION:
            return None
        return self.received / self.loaded

    def latency_us(self) -> dict[str, float | None]:
        """Latency summary in microseconds: min, avg, p50 … p99.9, max (all None when nothing replied)."""
        hist = self.histogram
        if not hist.get_total_count():
            return dict.fromkeys(LATENCY_FIELDS, None)
        summary = {"min": hist.get_min_value(), "avg": hist.get_mean_value()}
        for name, pct in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99), ("p999", 99.9)):
            summary[name] = hist.get_value_at_percentile(pct)
        summary["max"] = hist.get_max_value()
        return {name: round(value / 1000, 1) for name, value in summary.items()}


def split(plan: Plan, procs: int) -> list[Plan]:
    """Divide the users (and the open-loop rate) of ``plan`` over ``procs`` worker plans."""
    procs = max(1, min(procs, plan.users))
    plans, first = [], 0
    for k in range(procs):
        users = plan.users // procs + (1 if k < plan.users % procs else 0)
        rate = plan.rate * users / plan.users
        plans.append(replace(plan, users=users, first_user=first, rate=rate))
        first += users
    return plans


def ensure_file_limit(plan: Plan, procs: int) -> None:
    """Raise the open-file limit for the busiest worker; raises RailcarError if it cannot go high enough."""
    busiest = math.ceil(plan.users / max(1, min(procs, plan.users)))
    needed = busiest + FILES_PER_WORKER
    got = raise_open_file_limit(needed)
    if got < needed:
        raise RailcarError(
            f"{plan.users} users over {procs} processes need {needed} open files per process, "
            f"but the limit is {got}; raise it (ulimit -n) or use more --procs"
        )


@dataclass
class _Bin:
    """A bin of the time series still open: replies and latencies added as the workers' ticks come in."""

    replies: int = 0
    end: float = 0.0  # the latest elapsed time a tick into this bin was sent at
    histogram: HdrHistogram = field(default_factory=new_histogram)


class _Merge:
    """Folds the workers' ticks into totals, a merged histogram and a time series.

    A worker's tick says which bin its replies since the previous tick belong to
    (its ticks number the bins 0, 1, 2, … from the start), so every reply is counted
    in exactly one bin and the series adds up to the totals. A bin is closed once
    every worker has moved past it.
    """

    def __init__(self, result: LoadResult, workers: int) -> None:
        self.result = result
        self.latest: list[tuple[int, int, dict[str, int]]] = [(0, 0, {})] * workers
        self.next_bin = [0] * workers  # the lowest bin each worker can still add to
        self.bins: dict[int, _Bin] = {}
        self.last_rate = 0.0
        self.last_p99 = 0.0

    def tick(
        self,
        k: int,
        index: int,
        elapsed: float,
        sent: int,
        received: int,
        failures: dict[str, int],
        hist: bytes,
    ) -> None:
        previous = self.latest[k][1]
        self.latest[k] = (sent, received, failures)
        target = self.bins.setdefault(index, _Bin())
        target.replies += received - previous
        target.end = max(target.end, elapsed)
        if hist:
            self.result.histogram.decode_and_add(hist)
            target.histogram.decode_and_add(hist)
        self.next_bin[k] = index + 1
        self.close_bins(min(self.next_bin))
        self.result.elapsed = max(self.result.elapsed, elapsed)

    def done(self, k: int) -> None:
        """Worker ``k`` has sent its last tick."""
        self.next_bin[k] = sys.maxsize
        self.close_bins(min(self.next_bin))

    def close_bins(self, below: int) -> None:
        for index in sorted(i for i in self.bins if i < below):
            closed = self.bins.pop(index)
            start = index * TICK
            hist = closed.histogram
            counted = hist.get_total_count() > 0
            sample = Sample(
                start,
                min(TICK, closed.end - start),
                closed.replies,
                hist.get_value_at_percentile(50) / 1000 if counted else None,
                hist.get_value_at_percentile(99) / 1000 if counted else None,
            )
            self.result.series.append(sample)
            self.last_rate, self.last_p99 = sample.rate, sample.p99_us or 0.0

    def totals(self) -> None:
        result = self.result
        self.close_bins(sys.maxsize)
        progress = self.progress()
        result.sent, result.received = progress.sent, progress.received
        result.failure_kinds = {
            kind: sum(failures.get(kind, 0) for _, _, failures in self.latest) for kind in FAILURE_KINDS
        }

    def progress(self) -> Progress:
        sent = sum(s for s, _, _ in self.latest)
        received = sum(r for _, r, _ in self.latest)
        failed = sum(request_failures(failures) for _, _, failures in self.latest)
        return Progress(self.result.elapsed, sent, received, failed, self.last_rate, self.last_p99)


def run(plan: Plan, procs: int, on_progress: Callable[[Progress], None] | None = None) -> LoadResult:
    """Run ``plan`` over ``procs`` worker processes; Ctrl-C ends it early with a partial result.

    Raises TargetUnreachable when no user could connect, RailcarError when the
    open-file limit is too low or a worker dies.
    """
    from railcar.load import worker  # noqa: PLC0415 - its event loop is not the CLI's business

    plans = split(plan, procs)
    ensure_file_limit(plan, len(plans))
    result = LoadResult(plan, len(plans))
    context = multiprocessing.get_context("spawn")
    pipes: list[Connection] = []
    processes = []
    with _sigint_ignored_by_children():
        for k, worker_plan in enumerate(plans):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=worker.main, args=(worker_plan, theirs), name=f"railcar-load-{k}", daemon=True
            )
            process.start()
            theirs.close()
            pipes.append(ours)
            processes.append(process)
    try:
        _drive(plan, pipes, result, on_progress)
    finally:
        for process in processes:
            reap(process, STOP_TIMEOUT)  # they stop by themselves once told; a stuck one is killed
        for pipe in pipes:
            pipe.close()
    return result


@contextlib.contextmanager
def _sigint_ignored_by_children() -> Iterator[None]:
    """Start workers with SIGINT ignored from birth (SIG_IGN survives exec).

    worker.main ignores SIGINT only once its imports are done: a Ctrl-C sent to the
    process group before that printed a KeyboardInterrupt traceback per worker.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _drive(
    plan: Plan, pipes: list[Connection], result: LoadResult, on_progress: Callable[[Progress], None] | None
) -> None:
    merge = _Merge(result, len(pipes))
    index = {id(pipe): k for k, pipe in enumerate(pipes)}
    try:
        errors = _await_ready(plan, pipes, result)
        if not result.connected:
            raise TargetUnreachable(f"no user could connect to {plan.host}:{plan.port}: {errors[0]}")
        start = time.perf_counter() + 0.05
        for pipe in pipes:
            pipe.send(("go", start))
    except BaseException:
        _send_all(pipes, ("stop",))
        raise
    waiting = set(range(len(pipes)))
    deadline = math.inf
    while waiting and time.monotonic() < deadline:
        try:
            _collect(pipes, waiting, merge, index)
            if on_progress is not None:
                on_progress(merge.progress())
        except KeyboardInterrupt:
            if result.interrupted:
                break
            result.interrupted = True
            deadline = time.monotonic() + STOP_TIMEOUT
            _send_all(pipes, ("stop",))
        except BaseException:
            _send_all(pipes, ("stop",))
            raise
    merge.totals()


def _collect(pipes: list[Connection], waiting: set[int], merge: _Merge, index: dict[int, int]) -> None:
    """Fold in what the workers have sent within one tick."""
    for pipe in wait([pipes[k] for k in waiting], timeout=TICK):
        assert isinstance(pipe, Connection)
        k = index[id(pipe)]
        message = _receive(pipe)
        if message[0] == "tick":
            merge.tick(k, *message[1:])
        else:
            merge.result.generator_rss += message[1]
            merge.result.loaded = max(merge.result.loaded, message[2])
            merge.done(k)
            waiting.discard(k)


def _await_ready(plan: Plan, pipes: list[Connection], result: LoadResult) -> list[str]:
    errors: list[str] = []
    timeout = 10.0 + plan.connect_timeout + READY_TIMEOUT_PER_USER * plan.users
    for pipe in pipes:
        if not pipe.poll(timeout):
            raise RailcarError(f"load workers did not connect their users within {timeout:.0f} s")
        _, connected, error = _receive(pipe)
        result.connected += connected
        if error:
            errors.append(error)
    return errors or ["unknown error"]


def _receive(pipe: Connection) -> tuple[Any, ...]:
    try:
        message: tuple[Any, ...] = pipe.recv()
    except EOFError:
        raise RailcarError("a load worker process died; see its error above") from None
    return message


def _send_all(pipes: list[Connection], message: tuple[Any, ...]) -> None:
    for pipe in pipes:
        try:
            pipe.send(message)
        except OSError:
            continue
