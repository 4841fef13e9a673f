"""The batcher: size, window, flush, close, bounded queue, on asyncio and on threads."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from railcar.batching import AsyncBatcher, BatchPolicy, ThreadBatcher
from railcar.errors import BatcherClosed, QueueFull


def test_policy_size_window_and_order() -> None:
    policy: BatchPolicy[int] = BatchPolicy(batch_size=3, window=0.5, queue_size=5)
    assert policy.deadline() is None
    assert not policy.add(1, now=10.0)
    assert policy.deadline() == 10.5
    assert not policy.due(10.4)
    assert policy.due(10.5)
    assert not policy.add(2, now=10.1)
    assert policy.add(3, now=10.2)
    assert policy.add_many([4, 5], now=10.3)
    assert not policy.has_room()
    with pytest.raises(QueueFull):
        policy.add(6, now=10.4)
    assert policy.take() == [1, 2, 3]
    assert policy.take() == [4, 5]
    assert len(policy) == 0


@pytest.mark.parametrize(("size", "window", "queue"), [(0, 0.1, 5), (3, -1, 5), (5, 0.1, 4)])
def test_policy_refuses_inconsistent_limits(size: int, window: float, queue: int) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        BatchPolicy(size, window, queue)


@given(st.lists(st.one_of(st.just("take"), st.integers(0, 5)), max_size=80))
def test_policy_keeps_order_and_bounds(operations: list[object]) -> None:
    policy: BatchPolicy[int] = BatchPolicy(batch_size=4, window=1.0, queue_size=10)
    added, taken, counter = [], [], 0
    for operation in operations:
        if operation == "take":
            batch = policy.take()
            assert len(batch) <= 4
            taken += batch
        elif policy.has_room():
            policy.add(counter, now=0.0)
            added.append(counter)
            counter += 1
        assert len(policy) <= 10
    taken += [item for _ in range(10) for item in policy.take()]
    assert taken == added


def run(coro: object) -> object:
    return asyncio.run(asyncio.wait_for(coro, 10))  # type: ignore[arg-type]


def test_async_full_batches_then_window_then_close() -> None:
    async def main() -> None:
        batches: list[list[int]] = []
        batcher: AsyncBatcher[int] = AsyncBatcher(
            batches.append, batch_size=100, window=0.05, queue_size=1000
        )
        for item in range(250):
            assert batcher.try_add(item)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert [len(b) for b in batches] == [100, 100]
        started = time.monotonic()
        while len(batches) < 3:
            await asyncio.sleep(0.005)
        assert 0.02 < time.monotonic() - started < 1.0
        assert batches[2] == list(range(200, 250))
        await batcher.add(7)
        await batcher.flush()
        assert batches[3] == [7]
        await batcher.close()
        with pytest.raises(BatcherClosed):
            batcher.try_add(1)
        with pytest.raises(BatcherClosed):
            await batcher.add(1)

    run(main())


def test_async_backpressure_with_a_slow_callback() -> None:
    async def main() -> None:
        release = asyncio.Event()
        delivered: list[int] = []
        longest = 0

        async def slow(batch: list[int]) -> None:
            await release.wait()
            delivered.extend(batch)

        batcher: AsyncBatcher[int] = AsyncBatcher(slow, batch_size=10, window=0.0, queue_size=30)

        async def produce() -> None:
            nonlocal longest
            for item in range(200):
                await batcher.add(item)
                longest = max(longest, len(batcher))

        producer = asyncio.ensure_future(produce())
        await asyncio.sleep(0.05)
        assert not producer.done()
        assert not batcher.try_add(-1)
        release.set()
        await producer
        await batcher.close()
        assert delivered == list(range(200))
        assert longest <= 30

    run(main())


def test_async_callback_errors_are_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> AsyncBatcher[int]:
        delivered: list[int] = []

        def sometimes(batch: list[int]) -> None:
            if 3 in batch:
                raise RuntimeError("boom")
            delivered.extend(batch)

        batcher: AsyncBatcher[int] = AsyncBatcher(sometimes, batch_size=2, window=0.0, queue_size=10)
        await batcher.add_many(range(8))
        await batcher.close()
        assert delivered == [0, 1, 4, 5, 6, 7]
        return batcher

    with caplog.at_level(logging.ERROR, logger="railcar.batching"):
        batcher = run(main())
    assert batcher.errors == 1  # type: ignore[attr-defined]
    assert "batch callback failed" in caplog.text


def test_threads_many_producers_every_item_once() -> None:
    delivered: list[int] = []
    sizes: list[int] = []

    def collect(batch: list[int]) -> None:
        sizes.append(len(batch))
        delivered.extend(batch)

    with ThreadBatcher(collect, batch_size=500, window=0.01, queue_size=2000) as batcher:

        def produce(offset: int) -> None:
            for item in range(offset, offset + 10_000):
                batcher.add(item)

        threads = [threading.Thread(target=produce, args=(i * 10_000,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(delivered) == list(range(80_000))
    assert max(sizes) <= 500
    with pytest.raises(BatcherClosed):
        batcher.add(1)


def test_threads_window_flush_and_backpressure() -> None:
    gate = threading.Event()
    delivered: list[int] = []

    def slow(batch: list[int]) -> None:
        gate.wait(5)
        delivered.extend(batch)

    batcher: ThreadBatcher[int] = ThreadBatcher(slow, batch_size=5, window=0.02, queue_size=10)
    try:
        for item in range(15):  # 5 in the stuck callback, 10 queued
            batcher.add(item, timeout=1)
        assert not batcher.try_add(99)
        with pytest.raises(QueueFull):
            batcher.add(99, timeout=0.05)
        gate.set()
        batcher.add(15, timeout=1)
        batcher.flush()
        assert delivered == list(range(16))
        batcher.add(16)
        deadline = time.monotonic() + 2
        while delivered[-1] != 16 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert delivered[-1] == 16
    finally:
        gate.set()
        batcher.close()
    assert not batcher._thread.is_alive()
