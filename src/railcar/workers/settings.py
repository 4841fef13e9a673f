"""The settings of a group of workers, checked before anything starts: architecture, balance, restarts.

Also what each worker (or the one process) serves: a stream server for a Handler, a
datagram server for a DatagramHandler, chosen by the options' kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from railcar.engine import datagram_server_class, server_class
from railcar.engine.api import (
    DatagramHandler,
    DatagramOptions,
    Handler,
    ServerOptions,
    Service,
)
from railcar.workers.balance import BALANCES, Balance

Architecture = Literal["sharding", "reactor"]
ARCHITECTURES: Final[tuple[Architecture, ...]] = ("sharding", "reactor")


@dataclass(frozen=True)
class Restarts:
    """When dead workers are restarted, and when the supervisor gives up on them."""

    first_delay: float = 0.1
    max_delay: float = 5.0
    healthy_after: float = 10.0
    max_deaths: int = 6

    def __post_init__(self) -> None:
        """Check the numbers; raises ValueError for a negative delay or fewer than one death."""
        if not 0 <= self.first_delay <= self.max_delay:
            raise ValueError("need 0 <= first_delay <= max_delay")
        if self.healthy_after < 0 or self.max_deaths < 1:
            raise ValueError("need healthy_after >= 0 and max_deaths >= 1")

    def delay(self, deaths: int) -> float:
        """The wait before restarting a worker that has died ``deaths`` times in a row (1 or more)."""
        return float(min(self.first_delay * 2 ** min(deaths - 1, 60), self.max_delay))


def check_settings(
    workers: int, architecture: str, balance: str | None, options: ServerOptions | DatagramOptions
) -> tuple[Architecture, Balance]:
    """The architecture and balance to use; raises ValueError for a combination that cannot work."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
    if balance is not None and balance not in BALANCES:
        raise ValueError(f"unknown balance {balance!r}; choose one of {', '.join(BALANCES)}")
    if isinstance(options, DatagramOptions) and architecture == "reactor":
        raise ValueError(
            "datagrams have no accept for a reactor to balance: use the sharding architecture "
            "(each worker binds the port with SO_REUSEPORT)"
        )
    if architecture == "sharding" and balance is not None:
        raise ValueError("balance applies to the reactor architecture; under sharding the kernel balances")
    unix = options.unix if isinstance(options, ServerOptions) else None
    if workers > 1 and architecture == "sharding" and (unix is not None or options.sock is not None):
        raise ValueError(
            "sharding binds the port in every worker (SO_REUSEPORT): it cannot share a Unix socket "
            "or a given socket; use the reactor architecture"
        )
    if workers > 1 and options.sock is not None:
        raise ValueError("workers listen on an address they bind, not on a given socket")
    chosen: Balance = "round-robin" if balance is None else balance
    return architecture, chosen


def server_for(
    handler: Handler | DatagramHandler, engine: str | None, options: ServerOptions | DatagramOptions
) -> Service:
    """An unstarted stream or datagram server of ``handler`` on ``engine``, as ``options`` say.

    Raises TypeError when the handler is of the other kind, EngineUnavailable (an engine
    without datagrams, among others).
    """
    if isinstance(options, DatagramOptions):
        if not isinstance(handler, DatagramHandler):
            raise TypeError(f"serving datagrams needs a DatagramHandler, got {type(handler).__name__}")
        return datagram_server_class(engine)(handler, options)
    if not isinstance(handler, Handler):
        raise TypeError(f"{type(handler).__name__} serves datagrams: pass datagrams=True to serve it")
    return server_class(engine)(handler, options)
