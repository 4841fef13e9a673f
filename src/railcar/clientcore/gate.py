"""A gate for asyncio callers that wait for a client's condition (connected, room, writable) by a deadline."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from railcar.errors import RequestTimeout


class Gate:
    """Callers park here until the client, whose state changed, opens the gate; each then re-checks.

    The owner calls ``open()`` whenever the condition may have become true (connected,
    reconnected, room freed, transport resumed, closed).  Opening wakes every parked caller
    once; a caller whose condition is still false parks again.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._parked: deque[asyncio.Future[None]] = deque()
        self._compact_at = 64

    def __bool__(self) -> bool:
        """True while someone is parked."""
        return bool(self._parked)

    def open(self) -> None:
        """Wake every caller parked now."""
        parked = self._parked
        while parked:
            _wake(parked.popleft())

    async def wait(
        self,
        ready: Callable[[], bool],
        deadline: float | None,
        timeout: float | None,
        waiting_for: Callable[[], str],
    ) -> None:
        """Return once ``ready()`` is true; raises RequestTimeout at ``deadline`` and what ``ready`` raises.

        The timeout's message is ``waiting_for()`` (what was still missing) and ``timeout``.
        """
        while not ready():
            waiter: asyncio.Future[None] = self._loop.create_future()
            if len(self._parked) >= self._compact_at:
                # Callers that timed out leave a finished future behind until the next open():
                # dropping them here keeps the deque within twice the callers really parked.
                self._parked = deque(parked for parked in self._parked if not parked.done())
                self._compact_at = max(64, 2 * len(self._parked))
            self._parked.append(waiter)
            if deadline is None:
                await waiter
                continue
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                waiter.cancel()
                raise RequestTimeout(f"{waiting_for()} within {timeout} s")
            timer = self._loop.call_later(remaining, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
