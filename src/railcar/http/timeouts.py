"""Slow and idle clients: per-connection deadlines, and one sweeper that enforces them for every connection.

The engine contract gives handlers no timers (``Server.loop`` exists only on the
asyncio engines; epoll and threads have ``call_soon_threadsafe`` and nothing else),
so the HTTP layer brings its own: one daemon thread per server that, every
``tick`` seconds, runs ``sweep`` on the engine's thread through
``call_soon_threadsafe``.  A deadline is therefore enforced up to one tick late;
the engines are untouched.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from railcar.engine.api import Server

log = logging.getLogger("railcar.http")


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds a client may take: for a request head, between requests, and for a request body.

    ``header`` runs from a connection's opening, or from the first byte of a request,
    until its head is complete (slowloris; answered 408 and closed, or closed silently
    when nothing was sent); ``idle`` runs from the end of a response until the first
    byte of the next request (closed silently); ``body`` runs from the end of a head
    until the whole body has arrived (408 and closed).
    """

    header: float = 10.0
    idle: float = 5.0
    body: float = 30.0

    def __post_init__(self) -> None:
        """Check every timeout is positive; raises ValueError when one is not."""
        for name in ("header", "idle", "body"):
            if not getattr(self, name) > 0:
                raise ValueError(f"the {name} timeout must be positive")

    @property
    def tick(self) -> float:
        """How often deadlines are checked: a quarter of the shortest, between 50 ms and 1 s."""
        return min(1.0, max(0.05, min(self.header, self.idle, self.body) / 4))


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
            target=self._run, args=(server, generation), name="railcar-http-sweeper", daemon=True
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
