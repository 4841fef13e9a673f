"""The batcher: size, window, flush, close and the bounded queue, as pure state, on asyncio and on threads."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from railcar.batching import AsyncBatcher, BatchPolicy, ThreadBatcher
from railcar.errors import BatcherClosed, QueueFull

R = TypeVar("R")


def run(main: Coroutine[Any, Any, R]) -> R:
    return asyncio.run(asyncio.wait_for(main, 10))


def wait_until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.001)


# -- the policy ------------------------------------------------------------------------


def test_policy_size_trigger_and_take_order() -> None:
    policy: BatchPolicy[int] = BatchPolicy(batch_size=3, window=60.0, queue_size=7)
    assert [policy.add(item, now=1.0) for item in range(7)] == [False, False, True, True, True, True, True]
    assert len(policy) == 7
    assert [policy.take(), policy.take(), policy.take(), policy.take()] == [[0, 1, 2], [3, 4, 5], [6], []]
    assert len(policy) == 0
    assert policy.taken == 7


def test_policy_window_is_timed_from_the_oldest_queued_item() -> None:
    policy: BatchPolicy[str] = BatchPolicy(batch_size=2, window=0.5, queue_size=4)
    assert policy.deadline() is None
    assert not policy.due(100.0)
    assert not policy.add("a", now=10.0)
    assert policy.deadline() == 10.5
    assert not policy.due(10.4)
    assert policy.due(10.5)
    assert policy.add("b", now=10.2)
    assert policy.add("c", now=10.3)  # still a full batch queued
    assert policy.take() == ["a", "b"]
    # What a take leaves behind keeps its own arrival time, not the batch's.
    assert policy.deadline() == 10.8
    assert not policy.due(10.7)
    assert policy.due(10.8)


def test_policy_window_zero_is_due_at_once() -> None:
    policy: BatchPolicy[int] = BatchPolicy(batch_size=5, window=0.0, queue_size=5)
    assert not policy.add(1, now=3.0)
    assert policy.deadline() == 3.0
    assert policy.due(3.0)


def test_policy_flush_makes_what_is_queued_due() -> None:
    policy: BatchPolicy[int] = BatchPolicy(batch_size=2, window=60.0, queue_size=10)
    assert policy.flush() == 0
    assert not policy.due(0.0)
    policy.add_many([1, 2, 3], now=0.0)
    assert policy.flush() == 3
    policy.add(4, now=0.0)
    assert policy.take() == [1, 2]
    assert policy.due(0.0)  # item 3 was queued at the flush
    assert policy.take() == [3, 4]
    assert not policy.due(0.0)
    assert policy.taken == 4


def test_policy_bounds_the_queue() -> None:
    policy: BatchPolicy[int] = BatchPolicy(batch_size=2, window=1.0, queue_size=4)
    assert policy.has_room(4)
    assert not policy.has_room(5)
    assert not policy.add_many([1], now=0.0)
    assert policy.add_many([2, 3], now=0.0)
    with pytest.raises(QueueFull, match="2 items do not fit"):
        policy.add_many([4, 5], now=0.0)
    assert len(policy) == 3  # all or nothing
    policy.add(4, now=0.0)
    assert not policy.has_room()
    with pytest.raises(QueueFull, match="holds 4 items"):
        policy.add(5, now=0.0)
    assert policy.take() == [1, 2]
    assert policy.has_room(2)


@pytest.mark.parametrize(
    ("batch_size", "window", "queue_size"),
    [(0, 0.1, 5), (3, -1.0, 5), (3, math.nan, 5), (5, 0.1, 4)],
)
def test_policy_refuses_inconsistent_limits(batch_size: int, window: float, queue_size: int) -> None:
    with pytest.raises(ValueError, match="batch_size >= 1"):
        BatchPolicy(batch_size, window, queue_size)


operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 7)),
        st.tuples(st.just("take"), st.just(0)),
        st.tuples(st.just("flush"), st.just(0)),
        st.tuples(st.just("wait"), st.sampled_from([0.0, 0.25, 0.5, 1.5])),
    ),
    max_size=80,
)


@given(
    batch_size=st.integers(1, 5),
    extra_room=st.integers(0, 6),
    window=st.sampled_from([0.0, 0.5, 1.0]),
    ops=operations,
)
def test_policy_matches_a_simple_model(
    batch_size: int, extra_room: int, window: float, ops: list[tuple[str, float]]
) -> None:
    queue_size = batch_size + extra_room
    policy: BatchPolicy[int] = BatchPolicy(batch_size, window, queue_size)
    model: deque[tuple[int, float]] = deque()  # (item, arrival time)
    taken: list[int] = []
    added = taken_count = flush_to = 0
    now = 0.0
    for operation, argument in ops:
        if operation == "add":
            items = list(range(added, added + int(argument)))
            if len(model) + len(items) <= queue_size:
                assert policy.has_room(len(items))
                due = policy.add(items[0], now) if len(items) == 1 else policy.add_many(items, now)
                model.extend((item, now) for item in items)
                added += len(items)
                assert due == (len(model) >= batch_size)
            else:
                assert not policy.has_room(len(items))
                with pytest.raises(QueueFull):
                    policy.add_many(items, now)
        elif operation == "take":
            batch = policy.take()
            assert len(batch) == min(batch_size, len(model))
            assert batch == [model.popleft()[0] for _ in batch]
            taken += batch
            taken_count += len(batch)
        elif operation == "flush":
            flush_to = policy.flush()
            assert flush_to == taken_count + len(model)
        else:
            now += argument
        assert len(policy) == len(model) <= queue_size
        assert policy.taken == taken_count
        assert policy.deadline() == (model[0][1] + window if model else None)
        expected_due = (
            len(model) >= batch_size or taken_count < flush_to or bool(model and model[0][1] + window <= now)
        )
        assert policy.due(now) == expected_due
    while len(policy):
        batch = policy.take()
        assert 0 < len(batch) <= batch_size
        taken += batch
    assert taken == list(range(added))


# -- asyncio ---------------------------------------------------------------------------


def test_async_batches_are_full_when_adding_fast() -> None:
    async def main() -> tuple[list[int], int]:
        sizes: list[int] = []
        longest = 0
        batcher: AsyncBatcher[int] = AsyncBatcher(
            lambda batch: sizes.append(len(batch)), batch_size=10, window=60.0, queue_size=50
        )
        for item in range(1005):
            await batcher.add(item)
            longest = max(longest, len(batcher))
        await batcher.close()
        return sizes, longest

    sizes, longest = run(main())
    assert sizes == [10] * 100 + [5]
    assert longest == 50


def test_async_window_delivers_a_partial_batch() -> None:
    async def main() -> float:
        arrived = asyncio.Event()
        batches: list[list[int]] = []

        def collect(batch: list[int]) -> None:
            batches.append(batch)
            arrived.set()

        batcher: AsyncBatcher[int] = AsyncBatcher(collect, batch_size=100, window=0.05, queue_size=100)
        started = time.monotonic()
        for item in range(3):
            assert batcher.try_add(item)
        await asyncio.wait_for(arrived.wait(), 5)
        elapsed = time.monotonic() - started
        assert batches == [[0, 1, 2]]
        await batcher.close()
        return elapsed

    assert 0.03 < run(main()) < 2.0


def test_async_window_zero_delivers_on_the_next_turns() -> None:
    async def main() -> None:
        batches: list[list[int]] = []
        batcher: AsyncBatcher[int] = AsyncBatcher(batches.append, batch_size=100, window=0.0, queue_size=100)
        batcher.try_add(1)
        batcher.try_add(2)
        for _ in range(5):
            await asyncio.sleep(0)
        assert batches == [[1, 2]]
        await batcher.close()

    run(main())


def test_async_flush_delivers_everything_queued_now() -> None:
    async def main() -> None:
        batches: list[list[int]] = []
        batcher: AsyncBatcher[int] = AsyncBatcher(batches.append, batch_size=2, window=60.0, queue_size=10)
        await batcher.flush()  # nothing queued: returns at once
        await batcher.add_many([1, 2, 3])
        await batcher.flush()
        assert batches == [[1, 2], [3]]
        assert len(batcher) == 0
        await batcher.close()

    run(main())


def test_async_flush_waits_for_the_batch_being_delivered() -> None:
    async def main() -> None:
        release = asyncio.Event()
        delivered: list[int] = []

        async def slow(batch: list[int]) -> None:
            await release.wait()
            delivered.extend(batch)

        batcher: AsyncBatcher[int] = AsyncBatcher(slow, batch_size=2, window=60.0, queue_size=10)
        await batcher.add_many([1, 2])
        await asyncio.sleep(0.01)
        assert len(batcher) == 0  # taken, stuck in the callback
        flush = asyncio.ensure_future(batcher.flush())
        await asyncio.sleep(0.01)
        assert not flush.done()
        release.set()
        await flush
        assert delivered == [1, 2]
        await batcher.close()

    run(main())


def test_async_close_flushes_then_refuses() -> None:
    async def main() -> None:
        batches: list[list[int]] = []
        async with AsyncBatcher(batches.append, batch_size=10, window=60.0, queue_size=10) as batcher:
            await batcher.add_many(range(3))
            assert not batcher.closed
        assert batcher.closed
        assert batches == [[0, 1, 2]]
        with pytest.raises(BatcherClosed):
            batcher.try_add(4)
        with pytest.raises(BatcherClosed):
            await batcher.add(4)
        for items in ([4], []):  # even nothing is refused: the caller learns it is closed
            with pytest.raises(BatcherClosed):
                await batcher.add_many(items)
        await batcher.close()  # idempotent
        assert batches == [[0, 1, 2]]

    run(main())


def test_async_try_add_refuses_while_a_slow_callback_holds_the_queue() -> None:
    async def main() -> None:
        release = asyncio.Event()
        delivered: list[int] = []

        async def slow(batch: list[int]) -> None:
            await release.wait()
            delivered.extend(batch)

        batcher: AsyncBatcher[int] = AsyncBatcher(slow, batch_size=2, window=0.0, queue_size=4)
        accepted = 0
        while batcher.try_add(accepted):
            accepted += 1
        assert accepted == 4  # nothing left yet: try_add never yields
        await asyncio.sleep(0.01)
        # One batch is stuck in the callback, so there is room for exactly one more batch.
        while batcher.try_add(accepted):
            accepted += 1
        assert accepted == 6
        assert len(batcher) == 4
        release.set()
        await batcher.close()
        assert delivered == list(range(6))

    run(main())


def test_async_add_waits_for_room_and_the_queue_stays_bounded() -> None:
    async def main() -> None:
        release = asyncio.Event()
        delivered: list[int] = []
        longest = 0

        async def slow(batch: list[int]) -> None:
            nonlocal longest
            longest = max(longest, len(batcher))
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
        assert len(batcher) == 30
        assert not batcher.try_add(-1)
        release.set()
        await asyncio.wait_for(producer, 5)
        await batcher.close()
        assert delivered == list(range(200))
        assert longest == 30

    run(main())


def test_async_add_many_delivers_several_batches() -> None:
    async def main() -> None:
        batches: list[list[int]] = []
        batcher: AsyncBatcher[int] = AsyncBatcher(batches.append, batch_size=10, window=60.0, queue_size=20)
        await batcher.add_many(range(95))
        assert len(batches) >= 7
        await batcher.close()
        assert [len(batch) for batch in batches] == [10] * 9 + [5]
        assert [item for batch in batches for item in batch] == list(range(95))

    run(main())


def test_async_close_wakes_blocked_adds_with_batcher_closed() -> None:
    async def main() -> None:
        release = asyncio.Event()

        async def stuck(batch: list[int]) -> None:
            await release.wait()

        batcher: AsyncBatcher[int] = AsyncBatcher(stuck, batch_size=1, window=0.0, queue_size=1)
        await batcher.add(1)
        await asyncio.sleep(0.01)
        await batcher.add(2)
        blocked = asyncio.ensure_future(batcher.add(3))
        await asyncio.sleep(0.01)
        assert not blocked.done()
        closing = asyncio.ensure_future(batcher.close())
        with pytest.raises(BatcherClosed):
            await asyncio.wait_for(blocked, 5)
        release.set()
        await asyncio.wait_for(closing, 5)

    run(main())


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_async_callback_errors_are_logged_counted_and_survived(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> tuple[list[int], int]:
        delivered: list[int] = []

        def sync_callback(batch: list[int]) -> None:
            if 3 in batch:
                raise RuntimeError("boom")
            delivered.extend(batch)

        async def async_callback(batch: list[int]) -> None:
            await asyncio.sleep(0)
            sync_callback(batch)

        callback = sync_callback if kind == "sync" else async_callback
        batcher: AsyncBatcher[int] = AsyncBatcher(callback, batch_size=2, window=60.0, queue_size=10)
        for item in range(8):
            await batcher.add(item)
        await batcher.close()
        return delivered, batcher.errors

    with caplog.at_level(logging.ERROR, logger="railcar.batching"):
        delivered, errors = run(main())
    assert errors == 1
    assert delivered == [0, 1, 4, 5, 6, 7]
    [record] = caplog.records
    assert record.name == "railcar.batching"
    assert "batch callback failed on 2 items" in record.getMessage()
    assert record.exc_info is not None


def test_async_flush_inside_the_callback_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> int:
        async def flushing(batch: list[int]) -> None:
            await batcher.flush()

        batcher: AsyncBatcher[int] = AsyncBatcher(flushing, batch_size=1, window=0.0, queue_size=1)
        await batcher.add(1)
        await batcher.close()
        return batcher.errors

    with caplog.at_level(logging.ERROR, logger="railcar.batching"):
        assert run(main()) == 1
    assert "would wait for itself" in caplog.text


def test_async_batcher_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError):
        AsyncBatcher(print)


# -- threads ---------------------------------------------------------------------------


def test_threads_batches_are_full_when_adding_fast() -> None:
    sizes: list[int] = []
    with ThreadBatcher(
        lambda batch: sizes.append(len(batch)), batch_size=10, window=60.0, queue_size=50
    ) as b:
        for item in range(1005):
            b.add(item)
    assert sizes == [10] * 100 + [5]


def test_threads_window_delivers_a_partial_batch() -> None:
    arrived = threading.Event()
    batches: list[list[int]] = []

    def collect(batch: list[int]) -> None:
        batches.append(batch)
        arrived.set()

    with ThreadBatcher(collect, batch_size=100, window=0.05, queue_size=100) as batcher:
        started = time.monotonic()
        for item in range(3):
            batcher.add(item)
        assert arrived.wait(5)
        assert 0.03 < time.monotonic() - started < 2.0
        assert batches == [[0, 1, 2]]
        batcher.add(3)  # a new window for the sleeping thread to time
        wait_until(lambda: len(batches) == 2)
    assert batches == [[0, 1, 2], [3]]


def test_threads_flush_delivers_everything_queued_now() -> None:
    batches: list[list[int]] = []
    with ThreadBatcher(batches.append, batch_size=2, window=60.0, queue_size=10) as batcher:
        batcher.flush()  # nothing queued: returns at once
        batcher.add_many([1, 2, 3])
        batcher.flush()
        assert batches == [[1, 2], [3]]
        assert len(batcher) == 0


def test_threads_close_flushes_refuses_and_joins() -> None:
    batches: list[list[int]] = []
    batcher: ThreadBatcher[int] = ThreadBatcher(batches.append, batch_size=10, window=60.0, queue_size=10)
    thread = batcher._thread
    assert thread.name == "railcar-batcher"
    assert not thread.daemon
    batcher.add_many(range(3))
    batcher.close()
    assert batcher.closed
    assert not thread.is_alive()
    assert batches == [[0, 1, 2]]
    with pytest.raises(BatcherClosed):
        batcher.try_add(4)
    with pytest.raises(BatcherClosed):
        batcher.add(4)
    for items in ([4], []):  # even nothing is refused: the caller learns it is closed
        with pytest.raises(BatcherClosed):
            batcher.add_many(items)
    batcher.close()  # idempotent
    batcher.flush()
    assert batches == [[0, 1, 2]]


def test_threads_many_producers_deliver_every_item_once_in_order() -> None:
    batches: list[list[int]] = []
    longest = 0

    def collect(batch: list[int]) -> None:
        nonlocal longest
        longest = max(longest, len(batcher))
        batches.append(batch)

    with ThreadBatcher(collect, batch_size=500, window=0.001, queue_size=2000) as batcher:

        def produce(offset: int) -> None:
            for item in range(offset, offset + 10_000):
                batcher.add(item)

        producers = [threading.Thread(target=produce, args=(n * 100_000,)) for n in range(8)]
        for producer in producers:
            producer.start()
        for producer in producers:
            producer.join()
    delivered = [item for batch in batches for item in batch]
    assert sorted(delivered) == [n * 100_000 + i for n in range(8) for i in range(10_000)]
    for n in range(8):  # each producer's items arrive in the order it added them
        mine = [item for item in delivered if item // 100_000 == n]
        assert mine == sorted(mine)
    assert max(len(batch) for batch in batches) <= 500
    assert longest <= 2000


class Stuck:
    """A callback that blocks until released, so the queue can be filled deterministically."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.delivered: list[int] = []

    def __call__(self, batch: list[int]) -> None:
        self.entered.set()
        self.release.wait(5)
        self.delivered.extend(batch)


def fill_behind_stuck_callback(callback: Stuck) -> ThreadBatcher[int]:
    """A batcher (batch 2, queue 4) whose thread is stuck on [0, 1] and whose queue holds 2..5."""
    batcher: ThreadBatcher[int] = ThreadBatcher(callback, batch_size=2, window=0.0, queue_size=4)
    batcher.add_many([0, 1])
    assert callback.entered.wait(5)
    for item in range(2, 6):
        batcher.add(item, timeout=1)
    assert not batcher.try_add(99)
    return batcher


def test_threads_blocked_add_resumes_when_room_frees() -> None:
    callback = Stuck()
    batcher = fill_behind_stuck_callback(callback)
    try:
        producer = threading.Thread(target=batcher.add, args=(6,))
        producer.start()
        time.sleep(0.05)
        assert producer.is_alive()
        callback.release.set()
        producer.join(5)
        assert not producer.is_alive()
    finally:
        callback.release.set()
        batcher.close()
    assert callback.delivered == list(range(7))


def test_threads_add_times_out_with_queue_full_on_a_stuck_callback() -> None:
    callback = Stuck()
    batcher = fill_behind_stuck_callback(callback)
    try:
        started = time.monotonic()
        with pytest.raises(QueueFull, match=r"within 0\.05 s"):
            batcher.add(99, timeout=0.05)
        assert time.monotonic() - started >= 0.04
        assert len(batcher) == 4
    finally:
        callback.release.set()
        batcher.close()
    assert callback.delivered == list(range(6))


def test_threads_close_wakes_blocked_adds_with_batcher_closed() -> None:
    callback = Stuck()
    batcher = fill_behind_stuck_callback(callback)
    outcome: list[BaseException] = []

    def blocked_add() -> None:
        try:
            batcher.add(99)
        except BatcherClosed as error:
            outcome.append(error)

    producer = threading.Thread(target=blocked_add)
    producer.start()
    time.sleep(0.02)
    closer = threading.Thread(target=batcher.close)
    closer.start()
    producer.join(5)
    assert len(outcome) == 1
    callback.release.set()
    closer.join(5)
    assert not closer.is_alive()
    assert callback.delivered == list(range(6))


@pytest.mark.parametrize("error", [RuntimeError("boom"), SystemExit(3)], ids=["exception", "sys.exit"])
def test_threads_callback_errors_are_logged_counted_and_survived(
    caplog: pytest.LogCaptureFixture, error: BaseException
) -> None:
    delivered: list[int] = []

    def sometimes(batch: list[int]) -> None:
        if 3 in batch:
            raise error
        delivered.extend(batch)

    with caplog.at_level(logging.ERROR, logger="railcar.batching"):
        with ThreadBatcher(sometimes, batch_size=2, window=60.0, queue_size=10) as batcher:
            batcher.add_many(range(8))
    assert batcher.errors == 1
    assert delivered == [0, 1, 4, 5, 6, 7]
    [record] = caplog.records
    assert "batch callback failed on 2 items" in record.getMessage()
    assert record.exc_info is not None


def test_threads_flush_inside_the_callback_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    def flushing(batch: list[int]) -> None:
        batcher.flush()

    with caplog.at_level(logging.ERROR, logger="railcar.batching"):
        with ThreadBatcher(flushing, batch_size=1, window=0.0, queue_size=1) as batcher:
            batcher.add(1)
    assert batcher.errors == 1
    assert "would wait for itself" in caplog.text


@pytest.mark.parametrize(("batch_size", "queue_size"), [(1.5, 10), (1, math.nan), (2, 10.0)])
def test_policy_refuses_limits_that_are_not_ints(batch_size: Any, queue_size: Any) -> None:
    with pytest.raises(TypeError, match="ints"):
        BatchPolicy(batch_size=batch_size, window=0.1, queue_size=queue_size)


def test_async_callback_raising_cancelled_error_is_a_failure_not_a_stall() -> None:
    async def main() -> tuple[list[list[int]], int]:
        got: list[list[int]] = []

        async def callback(batch: list[int]) -> None:
            if 1 in batch:
                raise asyncio.CancelledError  # e.g. a future cancelled under the callback
            got.append(batch)

        batcher: AsyncBatcher[int] = AsyncBatcher(callback, batch_size=1, window=0.01, queue_size=10)
        await batcher.add(1)
        await batcher.add(2)
        await asyncio.wait_for(batcher.close(), 2)
        return got, batcher.errors

    assert run(main()) == ([[2]], 1)


@pytest.mark.parametrize("window", [math.inf, 1e12])
def test_thread_window_past_timeout_max_still_delivers_on_flush_and_close(window: float) -> None:
    got: list[list[int]] = []
    batcher: ThreadBatcher[int] = ThreadBatcher(got.append, batch_size=3, window=window, queue_size=10)
    batcher.add(1)
    time.sleep(0.05)
    batcher.add(2)
    batcher.add(3)
    wait_until(lambda: got == [[1, 2, 3]])
    batcher.add(4)
    batcher.flush()
    batcher.close()
    assert got == [[1, 2, 3], [4]]


def test_threads_add_refuses_a_nan_timeout_when_it_would_wait() -> None:
    release = threading.Event()
    with ThreadBatcher(lambda _batch: release.wait(5), batch_size=1, window=60.0, queue_size=1) as batcher:
        batcher.add(1)  # taken by the callback, which holds on
        wait_until(lambda: batcher.try_add(2))  # the queue's one place is taken
        with pytest.raises(ValueError, match="nan"):
            batcher.add(3, timeout=float("nan"))
        release.set()
