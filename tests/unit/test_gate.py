"""The shared Gate: callers wait for a condition by a deadline; opening wakes them to re-check."""

from __future__ import annotations

import asyncio

import pytest

from railcar.clientcore.gate import Gate
from railcar.errors import RequestTimeout


def test_waits_until_ready_and_times_out_with_what_was_missing() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        gate = Gate(loop)
        state = {"up": False}
        waiter = asyncio.ensure_future(gate.wait(lambda: state["up"], None, None, lambda: "down"))
        await asyncio.sleep(0)
        assert gate
        gate.open()  # still not ready: parks again
        await asyncio.sleep(0)
        assert not waiter.done()
        state["up"] = True
        gate.open()
        await asyncio.wait_for(waiter, 1)
        assert not gate
        state["up"] = False
        with pytest.raises(RequestTimeout, match=r"not connected within 0\.05 s"):
            await gate.wait(lambda: state["up"], loop.time() + 0.05, 0.05, lambda: "not connected")

    asyncio.run(body())


def test_ready_may_raise() -> None:
    async def body() -> None:
        def closed() -> bool:
            raise ConnectionError("client closed")

        with pytest.raises(ConnectionError, match="client closed"):
            await Gate(asyncio.get_running_loop()).wait(closed, None, None, lambda: "")

    asyncio.run(body())


def test_callers_that_timed_out_do_not_pile_up() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        gate = Gate(loop)
        for _ in range(1000):
            with pytest.raises(RequestTimeout):
                await gate.wait(lambda: False, loop.time() + 0.0001, 0.0001, lambda: "never")
        assert len(gate._line) <= 64

    asyncio.run(body())


def test_first_come_first_served_even_when_a_later_caller_would_fit() -> None:
    async def body() -> None:
        gate = Gate(asyncio.get_running_loop())
        room = {"free": 0}
        admitted: list[str] = []

        async def take(name: str, count: int) -> None:
            await gate.wait(lambda: room["free"] >= count, None, None, lambda: "no room")
            room["free"] -= count
            admitted.append(name)

        big = asyncio.ensure_future(take("big", 3))
        await asyncio.sleep(0)
        smalls = [asyncio.ensure_future(take(f"small{n}", 1)) for n in range(2)]
        await asyncio.sleep(0)
        room["free"] = 2  # enough for both small ones, not for the big one ahead of them
        gate.open()
        for _ in range(5):
            await asyncio.sleep(0)
        assert admitted == []
        assert gate.waiting == 3
        room["free"] = 5
        gate.open()  # the big one goes, then each one through wakes the next
        await asyncio.wait_for(asyncio.gather(big, *smalls), 1)
        assert admitted == ["big", "small0", "small1"]
        assert not gate

    asyncio.run(body())


def test_a_caller_that_gives_up_at_the_head_hands_the_turn_on() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        gate = Gate(loop)
        state = {"up": False}
        first = asyncio.ensure_future(gate.wait(lambda: False, loop.time() + 0.05, 0.05, lambda: "never"))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(gate.wait(lambda: state["up"], None, None, lambda: "down"))
        await asyncio.sleep(0)
        state["up"] = True  # the second could go, but waits its turn behind the first
        with pytest.raises(RequestTimeout, match=r"never within 0\.05 s"):
            await first
        await asyncio.wait_for(second, 1)

    asyncio.run(body())
