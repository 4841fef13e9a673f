"""Batching ("train stations"): items wait until a batch is full, a time window passes, or a flush.

``BatchPolicy`` is the pure state (no clock, no threads, no loop); ``AsyncBatcher``
and ``ThreadBatcher`` drive it with an asyncio timer or a condition variable and
hand each batch to a callback, one batch at a time, in order.  The queue is
bounded: ``add`` waits for room, ``try_add`` refuses.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, TypeVar

from railcar.errors import BatcherClosed, QueueFull

T = TypeVar("T")
log = logging.getLogger("railcar.batching")


class BatchPolicy(Generic[T]):
    """When a batch is due and what it holds; times are floats passed in by the driver."""

    __slots__ = ("_items", "_oldest", "batch_size", "queue_size", "window")

    def __init__(self, batch_size: int, window: float, queue_size: int) -> None:
        """Check the limits; raises ValueError unless 1 <= batch_size <= queue_size and window >= 0."""
        if batch_size < 1 or window < 0 or queue_size < batch_size:
            raise ValueError("need batch_size >= 1, window >= 0 and queue_size >= batch_size")
        self.batch_size = batch_size
        self.window = window
        self.queue_size = queue_size
        self._items: list[T] = []
        self._oldest = 0.0

    def __len__(self) -> int:
        """Number of queued items."""
        return len(self._items)

    def has_room(self, count: int = 1) -> bool:
        """True if ``count`` more items fit in the queue."""
        return len(self._items) + count <= self.queue_size

    def add(self, item: T, now: float) -> bool:
        """Queue an item and return True when a full batch is ready; raises QueueFull when full."""
        items = self._items
        if len(items) >= self.queue_size:
            raise QueueFull(f"batch queue holds {self.queue_size} items")
        if not items:
            self._oldest = now
        items.append(item)
        return len(items) >= self.batch_size

    def add_many(self, new_items: Iterable[T], now: float) -> bool:
        """Queue several items and return True when a full batch is ready; raises QueueFull (adding none)."""
        batch = list(new_items)
        if not self.has_room(len(batch)):
            raise QueueFull(f"{len(batch)} items do not fit in a queue of {self.queue_size}")
        if batch and not self._items:
            self._oldest = now
        self._items += batch
        return len(self._items) >= self.batch_size

    def deadline(self) -> float | None:
        """When the oldest queued item's window ends (None when empty)."""
        return self._oldest + self.window if self._items else None

    def due(self, now: float) -> bool:
        """True when a full batch is queued or the oldest item's window has passed."""
        items = self._items
        return len(items) >= self.batch_size or (bool(items) and now >= self._oldest + self.window)

    def take(self) -> list[T]:
        """Remove and return up to ``batch_size`` of the oldest items."""
        size = self.batch_size
        batch = self._items[:size]
        del self._items[:size]
        return batch


class AsyncBatcher(Generic[T]):
    """Delivers batches to ``callback`` from the running asyncio loop; awaits awaitable callbacks."""

    def __init__(
        self,
        callback: Callable[[list[T]], Awaitable[None] | None],
        *,
        batch_size: int = 1000,
        window: float = 0.001,
        queue_size: int = 10_000,
    ) -> None:
        """Create the batcher inside a running loop; raises ValueError for inconsistent limits."""
        self._policy: BatchPolicy[T] = BatchPolicy(batch_size, window, queue_size)
        self._callback = callback
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._runner: asyncio.Task[None] | None = None
        self._room: deque[asyncio.Future[None]] = deque()
        self._flushing = 0
        self._closed = False
        self.errors = 0

    def __len__(self) -> int:
        """Number of queued items."""
        return len(self._policy)

    @property
    def closed(self) -> bool:
        """True once ``close`` has been called."""
        return self._closed

    def try_add(self, item: T) -> bool:
        """Queue an item if there is room; return False if the queue is full; raises BatcherClosed."""
        if self._closed:
            raise BatcherClosed("batcher is closed")
        if not self._policy.has_room():
            return False
        self._added(self._policy.add(item, self._loop.time()))
        return True

    async def add(self, item: T) -> None:
        """Queue an item, waiting for room; raises BatcherClosed."""
        while not self.try_add(item):
            await self._wait_for_room()

    async def add_many(self, items: Iterable[T]) -> None:
        """Queue items in order, waiting for room as batches leave; raises BatcherClosed."""
        for item in items:
            if not self.try_add(item):
                await self.add(item)

    async def flush(self) -> None:
        """Deliver everything queued now and return once the callback has had it."""
        self._flushing += 1
        try:
            while len(self._policy) or self._runner is not None:
                self._start()
                if self._runner is not None:
                    await asyncio.shield(self._runner)
        finally:
            self._flushing -= 1

    async def close(self) -> None:
        """Flush, then refuse new items (BatcherClosed); idempotent."""
        self._closed = True
        await self.flush()
        self._wake_room()

    def _added(self, full: bool) -> None:
        if full:
            self._start()
        elif self._timer is None and self._runner is None:
            deadline = self._policy.deadline()
            assert deadline is not None
            self._timer = self._loop.call_at(deadline, self._start)

    def _start(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._runner is None and len(self._policy):
            self._runner = self._loop.create_task(self._deliver())

    async def _deliver(self) -> None:
        policy = self._policy
        try:
            while policy.due(self._loop.time()) or (self._flushing and len(policy)):
                batch = policy.take()
                self._wake_room()
                try:
                    outcome = self._callback(batch)
                    if inspect.isawaitable(outcome):
                        await outcome
                except Exception:
                    self.errors += 1
                    log.exception("batch callback failed on %d items", len(batch))
        finally:
            self._runner = None
        if len(policy):
            self._added(False)

    async def _wait_for_room(self) -> None:
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._room.append(waiter)
        await waiter

    def _wake_room(self) -> None:
        while self._room:
            waiter = self._room.popleft()
            if not waiter.done():
                waiter.set_result(None)


class ThreadBatcher(Generic[T]):
    """Delivers batches to ``callback`` from its own thread; safe from many producer threads."""

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
        self._cond = threading.Condition()
        self._closed = False
        self._flushing = 0
        self._delivering = False
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="railcar-batcher")
        self._thread.start()

    def __len__(self) -> int:
        """Number of queued items."""
        return len(self._policy)

    @property
    def closed(self) -> bool:
        """True once ``close`` has been called."""
        return self._closed

    def try_add(self, item: T) -> bool:
        """Queue an item if there is room; return False if the queue is full; raises BatcherClosed."""
        with self._cond:
            if self._closed:
                raise BatcherClosed("batcher is closed")
            if not self._policy.has_room():
                return False
            self._queue(item)
            return True

    def add(self, item: T, timeout: float | None = None) -> None:
        """Queue an item, blocking for room; raises BatcherClosed, or QueueFull after ``timeout`` s."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._closed or self._policy.has_room(), timeout):
                raise QueueFull(f"no room in the batch queue within {timeout} s")
            if self._closed:
                raise BatcherClosed("batcher is closed")
            self._queue(item)

    def add_many(self, items: Iterable[T], timeout: float | None = None) -> None:
        """Queue items in order, blocking for room; raises BatcherClosed or QueueFull like ``add``."""
        for item in items:
            self.add(item, timeout)

    def flush(self) -> None:
        """Deliver everything queued now and return once the callback has had it."""
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                self._cond.wait_for(lambda: not len(self._policy) and not self._delivering)
            finally:
                self._flushing -= 1

    def close(self) -> None:
        """Flush, refuse new items (BatcherClosed) and stop the delivery thread; idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> ThreadBatcher[T]:
        """Use as a context manager that closes the batcher."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the batcher."""
        self.close()

    def _queue(self, item: T) -> None:
        was_empty = not len(self._policy)
        if self._policy.add(item, time.monotonic()) or was_empty:
            self._cond.notify_all()  # a full batch, or a new window for the thread to time

    def _run(self) -> None:
        policy = self._policy
        while True:
            with self._cond:
                while not (
                    policy.due(time.monotonic()) or ((self._flushing or self._closed) and len(policy))
                ):
                    if self._closed:
                        return
                    deadline = policy.deadline()
                    self._cond.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
                batch = policy.take()
                self._delivering = True
                self._cond.notify_all()  # room for blocked producers
            try:
                self._callback(batch)
            except Exception:
                self.errors += 1
                log.exception("batch callback failed on %d items", len(batch))
            finally:
                with self._cond:
                    self._delivering = False
                    self._cond.notify_all()
