"""A line for asyncio callers that wait for a client's condition (connected, room, writable) by a deadline."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from railcar.errors import RequestTimeout


class _Place:
    """One caller's place in the line: the future it sleeps on (renewed each time it sleeps)."""

    __slots__ = ("future", "gone")

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future
        self.gone = False  # left (timed out, cancelled, failed) but not yet dropped from the line


class Gate:
    """Callers wait here, first come first served, until the client's condition holds for them.

    The owner calls ``open()`` whenever the condition may have become true (connected,
    reconnected, room freed, transport resumed, closed).  Only the first caller in line
    re-checks; once through (or gone) it wakes the next.  So a batch waiting for room for
    1,000 requests is not overtaken for ever by single calls that each fit, and a read that
    frees one slot wakes one caller, not every caller parked.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._line: deque[_Place] = deque()
        self.waiting = 0  # places in the line that are not gone

    def __bool__(self) -> bool:
        """True while someone waits: a new caller then queues behind them instead of passing."""
        return self.waiting > 0

    def open(self) -> None:
        """Wake the first caller in line to re-check the condition."""
        first = self._first()
        if first is not None:
            _wake(first.future)

    def _first(self) -> _Place | None:
        line = self._line
        while line and line[0].gone:
            line.popleft()
        return line[0] if line else None

    async def wait(
        self,
        ready: Callable[[], bool],
        deadline: float | None,
        timeout: float | None,
        waiting_for: Callable[[], str],
    ) -> None:
        """Return once first in line and ready; raises RequestTimeout at the deadline, or what ready raises.

        The timeout's message is ``waiting_for()`` (what was still missing) and ``timeout``.
        """
        if not self.waiting and ready():
            return
        loop = self._loop
        place = _Place(loop.create_future())
        self._line.append(place)
        self.waiting += 1
        try:
            while not (self._first() is place and ready()):
                if place.future.done():  # woken: sleep again on a fresh future, keeping the place
                    place.future = loop.create_future()
                if deadline is None:
                    await place.future
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise RequestTimeout(f"{waiting_for()} within {timeout} s")
                timer = loop.call_later(remaining, _wake, place.future)
                try:
                    await place.future
                finally:
                    timer.cancel()
        finally:
            self._leave(place)

    def _leave(self, place: _Place) -> None:
        """Take ``place`` out of the line; if it was first, the next caller's turn begins."""
        was_first = self._first() is place
        place.gone = True
        self.waiting -= 1
        if was_first:
            self.open()
        elif len(self._line) > 2 * self.waiting + 64:  # gone places pile up behind a slow head: drop them
            self._line = deque(other for other in self._line if not other.gone)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
