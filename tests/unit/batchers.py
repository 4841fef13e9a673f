"""Both batchers behind one blocking face, so a test body runs on each, and callbacks that work on either.

The ``AsyncBatcher`` lives on a loop in a thread of its own; its methods are called from the
test's thread (or any other) and waited for.  The ``ThreadBatcher`` is wrapped only so that
both faces offer the same extras (``batcher``, ``add_each``).  Batch callbacks run on the
driver's thread or loop, so what they record is read under a lock or after ``close()``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

from railcar.batching import AsyncBatcher, ThreadBatcher

R = TypeVar("R")
BATCHERS = ("async", "thread")


class LoopThread:
    """An event loop running in a daemon thread until closed."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, R], timeout: float = 30.0) -> R:
        """Run ``coro`` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, function: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """Call ``function`` on the loop (inside a task, so it sees the running loop) and wait for it."""

        async def call() -> R:
            return function(*args, **kwargs)

        return self.run(call())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class AsyncBatcherFace:
    """An ``AsyncBatcher`` on a LoopThread, with ThreadBatcher's blocking methods."""

    kind = "async"

    def __init__(self, runner: LoopThread, batcher: AsyncBatcher[Any]) -> None:
        self.runner = runner
        self.batcher = batcher

    def add(self, item: Any) -> None:
        self.runner.run(self.batcher.add(item))

    def try_add(self, item: Any) -> bool:
        return self.runner.call(self.batcher.try_add, item)

    def add_many(self, items: Iterable[Any]) -> None:
        self.runner.run(self.batcher.add_many(items))

    def add_each(self, items: Iterable[Any]) -> int:
        """``add`` the items one by one in ONE task; return the longest queue seen after an add."""

        async def add_each() -> int:
            longest = 0
            for item in items:
                await self.batcher.add(item)
                longest = max(longest, len(self.batcher))
            return longest

        return self.runner.run(add_each())

    def flush(self) -> None:
        self.runner.run(self.batcher.flush())

    def close(self) -> None:
        self.runner.run(self.batcher.close())

    def __len__(self) -> int:
        if threading.current_thread() is self.runner.thread:  # from a callback: the loop is ours already
            return len(self.batcher)
        return self.runner.call(len, self.batcher)

    @property
    def closed(self) -> bool:
        return self.batcher.closed

    @property
    def errors(self) -> int:
        return self.batcher.errors

    def __enter__(self) -> AsyncBatcherFace:
        self.runner.run(self.batcher.__aenter__())
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.runner.run(self.batcher.__aexit__(*exc_info))


class ThreadBatcherFace:
    """A ``ThreadBatcher``, used as it is, with the face's extras."""

    kind = "thread"

    def __init__(self, batcher: ThreadBatcher[Any]) -> None:
        self.batcher = batcher

    def add(self, item: Any) -> None:
        self.batcher.add(item)

    def try_add(self, item: Any) -> bool:
        return self.batcher.try_add(item)

    def add_many(self, items: Iterable[Any]) -> None:
        self.batcher.add_many(items)

    def add_each(self, items: Iterable[Any]) -> int:
        """``add`` the items one by one; return the longest queue seen after an add."""
        longest = 0
        for item in items:
            self.batcher.add(item)
            longest = max(longest, len(self.batcher))
        return longest

    def flush(self) -> None:
        self.batcher.flush()

    def close(self) -> None:
        self.batcher.close()

    def __len__(self) -> int:
        return len(self.batcher)

    @property
    def closed(self) -> bool:
        return self.batcher.closed

    @property
    def errors(self) -> int:
        return self.batcher.errors

    def __enter__(self) -> ThreadBatcherFace:
        self.batcher.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.batcher.__exit__(*exc_info)


BatcherFace = AsyncBatcherFace | ThreadBatcherFace
MakeBatcher = Callable[..., BatcherFace]


class Deliveries:
    """A batch callback that keeps the batches it gets; read them from any thread while it runs."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._batches: list[list[Any]] = []

    def __call__(self, batch: list[Any]) -> None:
        with self._changed:
            self._batches.append(batch)
            self._changed.notify_all()

    @property
    def batches(self) -> list[list[Any]]:
        with self._changed:
            return list(self._batches)

    @property
    def sizes(self) -> list[int]:
        return [len(batch) for batch in self.batches]

    def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until ``count`` batches have arrived; False if they have not within ``timeout``."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._batches) >= count, timeout)


class Stuck:
    """A batch callback that holds each batch until ``release()`` (or for 5 s), then keeps it.

    For a ThreadBatcher it blocks the delivery thread; for an AsyncBatcher it returns an
    awaitable, so the loop goes on serving the test while delivery waits.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.entered = threading.Event()
        self._released: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.delivered: list[Any] = []  # read it after close(), which waits for the callbacks

    def release(self) -> None:
        if not self._released.done():
            self._released.set_result(None)

    def __call__(self, batch: list[Any]) -> Coroutine[Any, Any, None] | None:
        self.entered.set()
        if self.kind == "async":
            return self._held(batch)
        concurrent.futures.wait([self._released], 5)
        self.delivered.extend(batch)
        return None

    async def _held(self, batch: list[Any]) -> None:
        await asyncio.wait([asyncio.wrap_future(self._released)], timeout=5)
        self.delivered.extend(batch)
