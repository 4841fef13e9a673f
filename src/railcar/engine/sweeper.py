"""Deadlines for handlers: one thread per server that runs a sweep on the engine's thread every tick.

The engine contract gives handlers no timers (``Server.loop`` exists only on the
asyncio engines; epoll and threads have ``call_soon_threadsafe`` and nothing else),
so a handler with per-connection deadlines (HTTP's slow and idle clients, reqrep's
half-sent frames) starts a ``Sweeper`` in ``on_start``: every ``tick`` seconds it runs
``sweep`` on the engine's thread through ``call_soon_threadsafe``.  A deadline is
therefore enforced up to one tick late; the engines are untouched.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from railcar.engine.api import Server

log = logging.getLogger("railcar.engine")


def tick_for(*timeouts: float) -> float:
    """How often to check deadlines: a quarter of the shortest timeout, between 50 ms and 1 s."""
    return min(1.0, max(0.05, min(timeouts) / 4))


class Sweeper:
    """Runs ``sweep`` on a server's engine thread every ``tick`` seconds while that server runs."""

    def __init__(self, tick: float, sweep: Callable[[], None]) -> None:
        self._tick = tick
        self._sweep = sweep
        self._generation = 0
        self._lock = threading.Lock()

    def start(self, server: Server) -> None:
        """Begin sweeping for ``server`` (called from ``on_start``); a previous run's sweeper ends."""
        with self._lock:
            self._generation += 1
            generation = self._generation
        thread = threading.Thread(
            target=self._run, args=(server, generation), name="railcar-sweeper", daemon=True
        )
        thread.start()

    def _run(self, server: Server, generation: int) -> None:
        seen_running = False
        started = time.monotonic()
        while generation == self._generation:
            time.sleep(self._tick)
            if not server.running:
                # on_start may come before start() returns; a server never seen running within
                # a minute, or seen and now stopped, has no more use for its sweeper.
                if seen_running or time.monotonic() - started > 60:
                    return
                continue
            seen_running = True
            try:
                server.call_soon_threadsafe(self._sweep)
            except RuntimeError:  # stopped between the check and the call
                return
            except Exception:
                log.exception("timeout sweep failed")
