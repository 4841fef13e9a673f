"""How the reactor's acceptor picks the worker for each accepted connection: pure policies, no I/O.

A policy sees the client's address and, per worker, its live connection count
(None for a worker that is down or not ready yet), and returns the worker's index.

- ``round-robin``: the next worker up after the one chosen last; N workers get
  every N-th connection each (1,000 connections over 4 workers: 250 each).
- ``least-connections``: the worker with the fewest live connections, ties going
  round-robin; long-lived connections therefore pile up nowhere.
- ``source-ip-hash``: a stable hash of the client's IP (CRC-32, the same in every
  process and run) modulo the number of workers, so one client always reaches the
  same worker while it is up; if it is down, the next one up takes its clients
  and gives them back when it returns.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Final, Literal, Protocol

Balance = Literal["round-robin", "least-connections", "source-ip-hash"]
BALANCES: Final[tuple[Balance, ...]] = ("round-robin", "least-connections", "source-ip-hash")


class Policy(Protocol):
    """Chooses a worker for a new connection."""

    def choose(self, client: str, loads: Sequence[int | None]) -> int:
        """The index of the worker for a connection from ``client``; raises LookupError if none is up."""


class RoundRobin:
    """Each worker up in turn."""

    def __init__(self) -> None:
        self.last = -1

    def choose(self, client: str, loads: Sequence[int | None]) -> int:
        """The first worker up after the one chosen last; raises LookupError if none is up."""
        count = len(loads)
        for step in range(1, count + 1):
            index = (self.last + step) % count
            if loads[index] is not None:
                self.last = index
                return index
        raise LookupError("no worker is up")


class LeastConnections:
    """The worker with the fewest live connections; among equals, round-robin."""

    def __init__(self) -> None:
        self.last = -1

    def choose(self, client: str, loads: Sequence[int | None]) -> int:
        """The least loaded worker up; raises LookupError if none is up."""
        count = len(loads)
        best, best_load = -1, 0
        for step in range(1, count + 1):
            index = (self.last + step) % count
            load = loads[index]
            if load is not None and (best < 0 or load < best_load):
                best, best_load = index, load
        if best < 0:
            raise LookupError("no worker is up")
        self.last = best
        return best


class SourceIpHash:
    """The worker a client's IP hashes to, or the next one up after it."""

    def choose(self, client: str, loads: Sequence[int | None]) -> int:
        """The worker for ``client``'s IP; raises LookupError if none is up."""
        count = len(loads)
        home = zlib.crc32(client.encode()) % count
        for step in range(count):
            index = (home + step) % count
            if loads[index] is not None:
                return index
        raise LookupError("no worker is up")


def policy(name: str) -> Policy:
    """A fresh policy of that name; raises ValueError for an unknown one."""
    if name == "round-robin":
        return RoundRobin()
    if name == "least-connections":
        return LeastConnections()
    if name == "source-ip-hash":
        return SourceIpHash()
    raise ValueError(f"unknown balance {name!r}; choose one of {', '.join(BALANCES)}")
