"""Batching ("train stations"): items wait until a batch is full, a time window passes, or a flush.

``BatchPolicy`` is the pure state (no clock, no threads, no event loop: times are
passed in), so the two drivers share every batching decision: ``AsyncBatcher``
runs it with one ``loop.call_at`` timer and ``ThreadBatcher`` with a condition
variable and one delivery thread.  Both hand each batch to a callback, one batch
at a time, in order.  The queue is bounded: ``add`` waits for room and
``try_add`` refuses, so a slow consumer slows producers down instead of growing
memory.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Generic, TypeVar

from railcar.errors import BatcherClosed, QueueFull

T = TypeVar("T")
log = logging.getLogger("railcar.batching")


class BatchPolicy(Generic[T]):
    """A bounded queue that says when a batch is due; times are monotonic seconds passed in by the driver.

    A batch is due when ``batch_size`` items are queued, when the oldest queued
    item has waited ``window`` seconds (0: at the driver's next opportunity), or
    until everything queued at the last ``flush()`` has been taken.
    """

    __slots__ = ("_flush_to", "_head", "_items", "_times", "batch_size", "queue_size", "taken", "window")

    def __init__(self, batch_size: int, window: float, queue_size: int) -> None:
        """Raises ValueError unless 1 <= batch_size <= queue_size and window >= 0, TypeError unless ints."""
        if not isinstance(batch_size, int) or not isinstance(queue_size, int):
            raise TypeError(f"batch_size and queue_size must be ints (got {batch_size!r}, {queue_size!r})")
        if batch_size < 1 or not window >= 0 or queue_size < batch_size:  # `not >=` also refuses NaN
            raise ValueError(
                f"need batch_size >= 1, window >= 0 and queue_size >= batch_size "
                f"(got {batch_size}, {window}, {queue_size})"
            )
        self.batch_size = batch_size
        self.window = window
        self.queue_size = queue_size
        self.taken = 0  # items taken since creation: the position flush() targets are measured in
        # Taken items stay in front of ``_head`` until compaction, so a take costs
        # O(batch) instead of shifting the whole queue; each item's arrival time is
        # kept so that the window of what a take leaves behind is still exact.
        self._items: list[T] = []
        self._times: list[float] = []
        self._head = 0
        self._flush_to = 0

    def __len__(self) -> int:
        """Number of queued items."""
        return len(self._items) - self._head

    def has_room(self, count: int = 1) -> bool:
        """True if ``count`` more items fit in the queue."""
        return len(self._items) - self._head + count <= self.queue_size

    def add(self, item: T, now: float) -> bool:
        """Queue ``item``; return True when a full batch is queued; raises QueueFull when there is no room."""
        queued = len(self._items) - self._head
        if queued >= self.queue_size:
            raise QueueFull(f"the batch queue holds {self.queue_size} items")
        self._items.append(item)
        self._times.append(now)
        return queued + 1 >= self.batch_size

    def add_many(self, items: Sequence[T], now: float) -> bool:
        """Queue all ``items`` or none; return True when a full batch is queued; raises QueueFull."""
        if not self.has_room(len(items)):
            raise QueueFull(f"{len(items)} items do not fit: the batch queue holds at most {self.queue_size}")
        self._items += items
        self._times += [now] * len(items)
        return len(self._items) - self._head >= self.batch_size

    def deadline(self) -> float | None:
        """When the window of the oldest queued item ends, or None when the queue is empty."""
        if self._head == len(self._items):
            return None
        return self._times[self._head] + self.window

    def due(self, now: float) -> bool:
        """True when a batch should be taken at time ``now`` (full batch, window over, or flush pending)."""
        head = self._head
        queued = len(self._items) - head
        return (
            queued >= self.batch_size
            or self.taken < self._flush_to
            or (queued > 0 and self._times[head] + self.window <= now)
        )

    def flush(self) -> int:
        """Make everything queued now due; return the value of ``taken`` once it has all been taken."""
        self._flush_to = self.taken + len(self._items) - self._head
        return self._flush_to

    def take(self) -> list[T]:
        """Remove and return up to ``batch_size`` of the oldest items (an empty list when none are queued)."""
        items = self._items
        head = self._head
        batch = items[head : head + self.batch_size]
        head += len(batch)
        self.taken += len(batch)
        if head == len(items):
            items.clear()
            self._times.clear()
            head = 0
        elif 2 * head >= len(items):
            # Compacting only once the taken prefix is as long as what is left
            # moves each item at most once on average.
            del items[:head]
            del self._times[:head]
            head = 0
        self._head = head
        return batch


class AsyncBatcher(Generic[T]):
    """Gathers items on an asyncio loop and hands them to ``callback`` in batches, one at a time, in order.

    Create it and use it on one running loop.  ``callback(batch)`` gets a new list it
    may keep; if it returns an awaitable, that is awaited before the next batch.  A
    callback that raises is logged ("railcar.batching") and counted in ``errors``,
    and delivery goes on.  ``try_add`` never yields, so a producer that only calls
    it must await something (``add`` when it refuses) to let batches leave.  Close
    the batcher before the loop ends: what is still queued then is never delivered.
    """

    def __init__(
        self,
        callback: Callable[[list[T]], Awaitable[None] | None],
        *,
        batch_size: int = 1000,
        window: float = 0.001,
        queue_size: int = 10_000,
    ) -> None:
        """Bind to the running loop; raises ValueError for bad limits, RuntimeError outside a loop."""
        self._policy: BatchPolicy[T] = BatchPolicy(batch_size, window, queue_size)
        self._callback = callback
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._drainer: asyncio.Task[None] | None = None
        self._room_waiters: list[asyncio.Future[None]] = []
        self._flush_waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._delivered = 0  # items whose callback has returned (or raised)
        self._closed = False
        self.errors = 0

    def __len__(self) -> int:
        """Number of queued items (a batch being delivered no longer counts)."""
        return len(self._policy)

    @property
    def closed(self) -> bool:
        """True once ``close`` has been called."""
        return self._closed

    def try_add(self, item: T) -> bool:
        """Queue ``item`` if there is room; return whether it was queued; raises BatcherClosed after close."""
        if self._closed:
            raise BatcherClosed("the batcher is closed")
        policy = self._policy
        if not policy.has_room():
            return False
        self._queued(policy.add(item, self._loop.time()))
        return True

    async def add(self, item: T) -> None:
        """Queue ``item``, waiting while the queue is full; raises BatcherClosed after close."""
        while not self.try_add(item):
            await self._room_freed()

    async def add_many(self, items: Iterable[T]) -> None:
        """Queue ``items`` in order, waiting for room as often as needed; raises BatcherClosed after close.

        Items queued before a close is noticed are delivered; the rest are not queued.
        """
        if self._closed:
            raise BatcherClosed("the batcher is closed")
        pending = list(items)
        policy = self._policy
        start = 0
        while start < len(pending):
            if self._closed:
                raise BatcherClosed("the batcher is closed")
            room = policy.queue_size - len(policy)
            if not room:
                await self._room_freed()
                continue
            chunk = pending[start : start + room]
            start += len(chunk)
            self._queued(policy.add_many(chunk, self._loop.time()))

    async def flush(self) -> None:
        """Deliver everything queued now, return once the callback has had it; raises RuntimeError in it."""
        target = self._policy.flush()
        if self._delivered >= target:
            return
        if self._drainer is not None and asyncio.current_task() is self._drainer:
            raise RuntimeError("flush() inside the batch callback would wait for itself")
        self._queued(True)
        waiter = self._loop.create_future()
        self._flush_waiters.append((target, waiter))
        await waiter

    async def close(self) -> None:
        """Deliver everything queued, then refuse new items (BatcherClosed); idempotent."""
        self._closed = True
        self._wake_room()  # blocked adds raise BatcherClosed rather than wait for room
        await self.flush()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def __aenter__(self) -> AsyncBatcher[T]:
        """Use as an async context manager that closes the batcher."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the batcher."""
        await self.close()

    def _queued(self, due: bool) -> None:
        """Start delivery if a batch is due, else make sure a timer covers the oldest item's window."""
        if due:
            if self._drainer is None:
                self._drainer = self._loop.create_task(self._drain(), name="railcar-batcher")
        elif self._timer is None:
            self._arm_timer()

    def _arm_timer(self) -> None:
        deadline = self._policy.deadline()
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._drainer is not None:
            return  # the running delivery re-arms for what it leaves behind
        if self._policy.due(self._loop.time()):
            self._queued(True)
        else:
            self._arm_timer()  # the batch it was armed for left early; time the new oldest item

    async def _drain(self) -> None:
        policy = self._policy
        try:
            while policy.due(self._loop.time()):
                batch = policy.take()
                if self._room_waiters:
                    self._wake_room()
                try:
                    outcome = self._callback(batch)
                    if inspect.isawaitable(outcome):
                        await outcome
                except Exception:
                    self.errors += 1
                    log.exception("batch callback failed on %d items", len(batch))
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise  # the drainer itself is cancelled (the loop is ending)
                    # The callback's own CancelledError (a future cancelled under it) is its failure.
                    self.errors += 1
                    log.exception("batch callback was cancelled on %d items", len(batch))
                finally:
                    # Counted even when something escapes, or every later flush() would wait forever.
                    self._delivered += len(batch)
                    flushes = self._flush_waiters
                    while flushes and flushes[0][0] <= self._delivered:
                        waiter = flushes.popleft()[1]
                        if not waiter.done():
                            waiter.set_result(None)
        finally:
            self._drainer = None
        if len(policy) and self._timer is None:
            self._arm_timer()

    def _room_freed(self) -> asyncio.Future[None]:
        waiter = self._loop.create_future()
        self._room_waiters.append(waiter)
        return waiter

    def _wake_room(self) -> None:
        waiters, self._room_waiters = self._room_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class ThreadBatcher(Generic[T]):
    """Gathers items from many threads and hands them to ``callback`` in batches on one delivery thread.

    ``callback(batch)`` runs on the thread "railcar-batcher", one batch at a time, in
    order, and gets a new list it may keep; a callback that raises is logged
    ("railcar.batching") and counted in ``errors``.  The thread is not a daemon, so
    queued items are not lost at exit: close the batcher (``close()`` or ``with``),
    or the process does not end.
    """

    def __init__(
        self,
        callback: Callable[[list[T]], object],
        *,
        batch_size: int = 1000,
        window: float = 0.001,
        queue_size: int = 10_000,
    ) -> None:
        """Start the delivery thread; raises ValueError for inconsistent limits."""
        self._policy: BatchPolicy[T] = BatchPolicy(batch_size, window, queue_size)
        self._callback = callback
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the delivery thread sleeps here
        self._room = threading.Condition(self._lock)  # producers wait here for room
        self._done = threading.Condition(self._lock)  # flushes wait here for delivery
        # While the delivery thread sleeps (``_idle``) it only needs waking when its
        # plan changes: a batch became due, or, if it sleeps without a deadline, the
        # first item arrived.  Producers check this instead of notifying per item.
        self._idle = False
        self._timed = False
        self._closed = False
        self._delivered = 0  # items whose callback has returned (or raised)
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="railcar-batcher", daemon=False)
        self._thread.start()

    def __len__(self) -> int:
        """Number of queued items (a batch being delivered no longer counts)."""
        with self._lock:
            return len(self._policy)

    @property
    def closed(self) -> bool:
        """True once ``close`` has been called."""
        return self._closed

    def try_add(self, item: T) -> bool:
        """Queue ``item`` if there is room; return whether it was queued; raises BatcherClosed after close."""
        with self._lock:
            if self._closed:
                raise BatcherClosed("the batcher is closed")
            policy = self._policy
            if not policy.has_room():
                return False
            self._wake(policy.add(item, time.monotonic()))
            return True

    def add(self, item: T, timeout: float | None = None) -> None:
        """Queue ``item``, blocking while full; raises QueueFull (timeout), BatcherClosed, ValueError."""
        with self._lock:
            policy = self._policy
            if self._closed or not policy.has_room():
                self._wait_room(timeout)
            self._wake(policy.add(item, time.monotonic()))

    def add_many(self, items: Iterable[T]) -> None:
        """Queue ``items`` in order, blocking for room as often as needed; raises BatcherClosed after close.

        Items queued before the close are delivered; the rest are not queued.
        """
        pending = list(items)
        policy = self._policy
        start = 0
        with self._lock:
            if self._closed:
                raise BatcherClosed("the batcher is closed")
            while start < len(pending):
                if self._closed or not policy.has_room():
                    self._wait_room(None)
                chunk = pending[start : start + policy.queue_size - len(policy)]
                start += len(chunk)
                self._wake(policy.add_many(chunk, time.monotonic()))

    def flush(self) -> None:
        """Deliver everything queued now, return once the callback has had it; raises RuntimeError in it."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("flush() inside the batch callback would wait for itself")
        with self._lock:
            target = self._policy.flush()
            self._wake(True)
            self._done.wait_for(lambda: self._delivered >= target)

    def close(self) -> None:
        """Deliver everything queued, refuse new items (BatcherClosed), join the delivery thread; idempotent.

        Raises RuntimeError when called from the callback (the thread cannot join itself).
        """
        with self._lock:
            self._closed = True
            self._policy.flush()  # after a close nothing waits for its window
            self._wake(True)
            self._room.notify_all()
        self._thread.join()

    def __enter__(self) -> ThreadBatcher[T]:
        """Use as a context manager that closes the batcher."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the batcher."""
        self.close()

    def _wait_room(self, timeout: float | None) -> None:
        """Wait (lock held) until one item fits; raises QueueFull on timeout and BatcherClosed after close."""
        policy = self._policy
        if timeout is not None and math.isnan(timeout):
            raise ValueError("timeout must be a number of seconds or None, not nan")  # would wait forever
        if not self._room.wait_for(lambda: self._closed or policy.has_room(), timeout):
            raise QueueFull(f"no room in the batch queue within {timeout} s")
        if self._closed:
            raise BatcherClosed("the batcher is closed")

    def _wake(self, due: bool) -> None:
        """Wake the sleeping delivery thread (lock held) if a batch is due or it has no window to time."""
        if self._idle and (due or not self._timed):
            self._idle = False
            self._work.notify()

    def _run(self) -> None:
        policy = self._policy
        lock = self._lock
        with lock:
            while True:
                now = time.monotonic()
                if policy.due(now):
                    batch = policy.take()
                    self._room.notify_all()
                    lock.release()
                    try:
                        self._callback(batch)
                    except BaseException:  # even sys.exit() in a callback must not end delivery
                        self.errors += 1
                        log.exception("batch callback failed on %d items", len(batch))
                    finally:
                        lock.acquire()
                    self._delivered += len(batch)
                    self._done.notify_all()
                elif self._closed:
                    return  # close() made everything due, so nothing is left
                else:
                    deadline = policy.deadline()
                    self._idle = True
                    self._timed = deadline is not None
                    # A window past TIMEOUT_MAX (math.inf: size and flush only) would raise
                    # OverflowError here and end the thread with the queue undelivered.
                    self._work.wait(None if deadline is None else min(deadline - now, threading.TIMEOUT_MAX))
                    self._idle = False
