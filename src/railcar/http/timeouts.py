"""Slow and idle HTTP clients: the per-connection deadlines (an ``engine.sweeper.Sweeper`` enforces them)."""

from __future__ import annotations

from dataclasses import dataclass

from railcar.engine.sweeper import tick_for


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
        return tick_for(self.header, self.idle, self.body)
