"""The batcher: size, window, flush, close and the bounded queue, as pure state and on both drivers.

``BatchPolicy`` is tested alone.  Behaviour the two drivers share is one test body run on each
(the ``make_batcher`` fixture: ``AsyncBatcher`` on a loop in a thread behind a blocking face, and
``ThreadBatcher``); what only one driver has (awaitable callbacks, cancellation, ``try_add`` never
yielding; timeouts on ``add``, many producer threads, the delivery thread's limits) is tested on it alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from railcar.batching import AsyncBatcher, BatchPolicy, ThreadBatcher
from railcar.errors import BatcherClosed, QueueFull
from tests.unit.batchers import (
    BATCHERS,
    AsyncBatcherFace,
    BatcherFace,
    Deliveries,
    LoopThread,
    MakeBatcher,
    Stuck,
    ThreadBatcherFace,
)

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


@pytest.mark.parametrize(("batch_size", "queue_size"), [(1.5, 10), (1, math.nan), (2, 10.0)])
def test_policy_refuses_limits_that_are_not_ints(batch_size: Any, queue_size: Any) -> None:
    with pytest.raises(TypeError, match="ints"):
        BatchPolicy(batch_size=batch_size, window=0.1, queue_size=queue_size)


# -- both drivers: one body, run on AsyncBatcher (behind a blocking face) and on ThreadBatcher ----


@pytest.fixture(params=BATCHERS)
def batcher_kind(request: pytest.FixtureRequest) -> str:
    """Each driver, one after the other."""
    return str(request.param)


@pytest.fixture
def make_batcher(batcher_kind: str) -> Iterator[MakeBatcher]:
    """Make batchers of the current kind (the drivers' arguments) with blocking methods; closed after."""
    runner = LoopThread() if batcher_kind == "async" else None
    made: list[BatcherFace] = []

    def make(
        callback: Callable[[list[Any]], Any], *, batch_size: int, window: float, queue_size: int
    ) -> BatcherFace:
        limits = {"batch_size": batch_size, "window": window, "queue_size": queue_size}
        if runner is None:
            face: BatcherFace = ThreadBatcherFace(ThreadBatcher(callback, **limits))
        else:
            face = AsyncBatcherFace(runner, runner.call(AsyncBatcher, callback, **limits))
        made.append(face)
        return face

    yield make
    for face in made:
        with contextlib.suppress(Exception):
            face.close()
    if runner is not None:
        runner.close()


def fill_behind_stuck_callback(batcher: Any, callback: Stuck) -> None:
    """Given a batcher (batch 2, window 0, queue 4) on ``callback``: stick it on [0, 1] with 2..5 queued."""
    batcher.add_many([0, 1])
    assert callback.entered.wait(5)
    for item in range(2, 6):
        assert batcher.try_add(item)  # the queue has room for all four while [0, 1] is held
    assert not batcher.try_add(99)


def test_batches_are_full_when_adding_fast(batcher_kind: str, make_batcher: MakeBatcher) -> None:
    got = Deliveries()
    batcher = make_batcher(got, batch_size=10, window=60.0, queue_size=50)
    longest = batcher.add_each(range(1005))
    batcher.close()
    assert got.sizes == [10] * 100 + [5]
    assert longest <= 50
    if batcher_kind == "async":
        # Adds in one task never yield until the queue is full, so delivery only starts then; the
        # delivery thread of a ThreadBatcher takes batches while the producer adds, and may keep up.
        assert longest == 50


def test_window_delivers_a_partial_batch(make_batcher: MakeBatcher) -> None:
    got = Deliveries()
    batcher = make_batcher(got, batch_size=100, window=0.05, queue_size=100)
    started = time.monotonic()
    for item in range(3):
        assert batcher.try_add(item)
    assert got.wait_for(1)
    assert 0.03 < time.monotonic() - started < 2.0
    assert got.batches == [[0, 1, 2]]
    batcher.add(3)  # a new window for the idle driver (sleeping thread, no timer) to time
    assert got.wait_for(2)
    batcher.close()
    assert got.batches == [[0, 1, 2], [3]]


def test_flush_delivers_everything_queued_now(make_batcher: MakeBatcher) -> None:
    got = Deliveries()
    batcher = make_batcher(got, batch_size=2, window=60.0, queue_size=10)
    batcher.flush()  # nothing queued: returns at once
    batcher.add_many([1, 2, 3])
    batcher.flush()
    assert got.batches == [[1, 2], [3]]
    assert len(batcher) == 0
    batcher.close()


def test_close_flushes_then_refuses(batcher_kind: str, make_batcher: MakeBatcher) -> None:
    got = Deliveries()
    thread = None
    with make_batcher(got, batch_size=10, window=60.0, queue_size=10) as batcher:
        batcher.add_many(range(3))
        assert not batcher.closed
        if batcher_kind == "thread":  # only a ThreadBatcher has a delivery thread of its own
            thread = batcher.batcher._thread
            assert thread.name == "railcar-batcher"
            assert not thread.daemon
    assert batcher.closed
    if thread is not None:
        assert not thread.is_alive()  # close() joined it
    assert got.batches == [[0, 1, 2]]
    with pytest.raises(BatcherClosed):
        batcher.try_add(4)
    with pytest.raises(BatcherClosed):
        batcher.add(4)
    for items in ([4], []):  # even nothing is refused: the caller learns it is closed
        with pytest.raises(BatcherClosed):
            batcher.add_many(items)
    batcher.close()  # idempotent
    batcher.flush()
    assert got.batches == [[0, 1, 2]]


def test_add_waits_for_room_and_resumes_when_room_frees(batcher_kind: str, make_batcher: MakeBatcher) -> None:
    stuck = Stuck(batcher_kind)
    lengths: list[int] = []  # queue lengths seen by the callback and the producer (list.append is atomic)

    def slow(batch: list[int]) -> Any:
        lengths.append(len(batcher))
        return stuck(batch)

    batcher = make_batcher(slow, batch_size=10, window=0.0, queue_size=30)

    def produce() -> None:
        for item in range(200):
            batcher.add(item)
            lengths.append(len(batcher))

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        assert stuck.entered.wait(5)
        wait_until(lambda: len(batcher) == 30)
        time.sleep(0.05)
        assert producer.is_alive()
        assert len(batcher) == 30
        assert not batcher.try_add(-1)
    finally:
        stuck.release()
        producer.join(5)
    assert not producer.is_alive()
    batcher.close()
    assert stuck.delivered == list(range(200))
    assert max(lengths) == 30


def test_close_wakes_blocked_adds_with_batcher_closed(batcher_kind: str, make_batcher: MakeBatcher) -> None:
    stuck = Stuck(batcher_kind)
    batcher = make_batcher(stuck, batch_size=2, window=0.0, queue_size=4)
    fill_behind_stuck_callback(batcher, stuck)
    outcome: list[BaseException] = []

    def blocked_add() -> None:
        try:
            batcher.add(99)
        except BatcherClosed as error:
            outcome.append(error)

    producer = threading.Thread(target=blocked_add)
    producer.start()
    time.sleep(0.02)
    assert producer.is_alive()
    closer = threading.Thread(target=batcher.close)
    closer.start()
    producer.join(5)
    assert len(outcome) == 1
    stuck.release()
    closer.join(5)
    assert not closer.is_alive()
    assert stuck.delivered == list(range(6))


def test_callback_errors_are_logged_counted_and_survived(
    make_batcher: MakeBatcher, caplog: pytest.LogCaptureFixture
) -> None:
    delivered: list[int] = []  # read after close(), which waits for the callbacks

    def sometimes(batch: list[int]) -> None:
        if 3 in batch:
            raise RuntimeError("boom")
        delivered.extend(batch)

    with caplog.at_level(logging.ERROR, logger="railcar.batching"):
        with make_batcher(sometimes, batch_size=2, window=60.0, queue_size=10) as batcher:
            batcher.add_many(range(4))
            for item in range(4, 8):
                batcher.add(item)
    assert batcher.errors == 1
    assert delivered == [0, 1, 4, 5, 6, 7]
    [record] = caplog.records
    assert record.name == "railcar.batching"
    assert "batch callback failed on 2 items" in record.getMessage()
    assert record.exc_info is not None


def test_flush_inside_the_callback_is_refused(
    make_batcher: MakeBatcher, caplog: pytest.LogCaptureFixture
) -> None:
    def flushing(batch: list[int]) -> Any:
        # The driver's own flush, from its own thread or task: AsyncBatcher's is a coroutine that
        # the delivery task awaits as the callback's result; ThreadBatcher's raises at once.
        return batcher.batcher.flush()

    with caplog.at_level(logging.ERROR, logger="railcar.batching"):
        with make_batcher(flushing, batch_size=1, window=0.0, queue_size=1) as batcher:
            batcher.add(1)
    assert batcher.errors == 1
    assert "would wait for itself" in caplog.text


# -- asyncio only ----------------------------------------------------------------------


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


def test_async_awaited_callback_errors_are_logged_counted_and_survived(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> tuple[list[int], int]:
        delivered: list[int] = []

        async def callback(batch: list[int]) -> None:
            await asyncio.sleep(0)
            if 3 in batch:
                raise RuntimeError("boom")
            delivered.extend(batch)

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


def test_async_batcher_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError):
        AsyncBatcher(print)


# -- threads only ----------------------------------------------------------------------


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


def test_threads_add_times_out_with_queue_full_on_a_stuck_callback() -> None:
    callback = Stuck("thread")
    batcher: ThreadBatcher[int] = ThreadBatcher(callback, batch_size=2, window=0.0, queue_size=4)
    try:
        fill_behind_stuck_callback(batcher, callback)
        started = time.monotonic()
        with pytest.raises(QueueFull, match=r"within 0\.05 s"):
            batcher.add(99, timeout=0.05)
        assert time.monotonic() - started >= 0.04
        assert len(batcher) == 4
    finally:
        callback.release()
        batcher.close()
    assert callback.delivered == list(range(6))


def test_threads_sys_exit_in_a_callback_is_logged_counted_and_survived(
    caplog: pytest.LogCaptureFixture,
) -> None:
    delivered: list[int] = []

    def sometimes(batch: list[int]) -> None:
        if 3 in batch:
            raise SystemExit(3)
        delivered.extend(batch)

    with caplog.at_level(logging.ERROR, logger="railcar.batching"):
        with ThreadBatcher(sometimes, batch_size=2, window=60.0, queue_size=10) as batcher:
            batcher.add_many(range(8))
    assert batcher.errors == 1
    assert delivered == [0, 1, 4, 5, 6, 7]
    [record] = caplog.records
    assert "batch callback failed on 2 items" in record.getMessage()
    assert record.exc_info is not None


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
