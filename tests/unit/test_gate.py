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
        assert len(gate._parked) <= 64

    asyncio.run(body())
