"""Pools of request–response connections to one or several servers: calls go to the live ones.

Each connection reconnects on its own in the background; while it is down the pool passes it
over, so calls keep going to the others.  Only when none is up does a call go to one that is
reconnecting (and wait for it within the call's timeout).  A pool starts when at least one of
its connections can be made; the others are dialled in the background from the start.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator, Sequence
from typing import Any, Protocol, TypeVar

from numpy.typing import NDArray

from railcar.reqrep.client import Client
from railcar.reqrep.sync import SyncClient


class _Member(Protocol):
    @property
    def connected(self) -> bool: ...

    @property
    def closed(self) -> bool: ...

    @property
    def timeouts_in_a_row(self) -> int: ...

    last_error: BaseException | None


M = TypeVar("M", bound=_Member)


def _pick(members: Sequence[M], turn: Iterator[int]) -> M:
    """The next healthy member in rotation; else connected; else reconnecting; else the first.

    Healthy: connected, and no call timed out since its server last sent anything (a
    stopped or stalled server keeps its connection up, so ``connected`` alone is no proof).
    """
    start = next(turn)
    size = len(members)
    rotation = [members[(start + step) % size] for step in range(size)]
    for member in rotation:
        if member.connected and not member.timeouts_in_a_row:
            return member
    for member in rotation:
        if member.connected:
            return member
    for member in rotation:
        if not member.closed:
            return member
    return members[0]  # all closed: its call raises why


def _addresses(
    host: str, port: int, servers: Sequence[tuple[str, int]] | None, size: int
) -> list[tuple[str, int]]:
    """Spread ``size`` connections round-robin over ``servers``; raises ValueError for an empty pool."""
    if size < 1:
        raise ValueError(f"pool size must be at least 1, not {size}")
    if servers is not None and not servers:
        raise ValueError("servers must name at least one (host, port)")
    targets = list(servers) if servers is not None else [(host, port)]
    return [targets[index % len(targets)] for index in range(size)]


def _first_error(members: Sequence[_Member]) -> BaseException:
    """Why the first member of a pool that could not connect at all failed."""
    return next(member.last_error for member in members if member.last_error is not None)


class ClientPool:
    """Asyncio connections to one or several servers; use ``await ClientPool.connect(...)``."""

    def __init__(self, clients: list[Client]) -> None:
        self._clients = clients
        self._turn = itertools.count()

    @classmethod
    async def connect(
        cls,
        host: str = "127.0.0.1",
        port: int = 7001,
        size: int = 4,
        *,
        servers: Sequence[tuple[str, int]] | None = None,
        **options: Any,
    ) -> ClientPool:
        """Open ``size`` connections over ``servers`` (default: host, port); raises like ``Client.connect``.

        ``options`` are ``Client.connect``'s.  Connections that fail are dialled again in the
        background; only if none can be made does this raise (the first connection's error).
        """
        options = {**options, "retry_on_failed_connect": True}
        outcomes = await asyncio.gather(
            *(
                Client.connect(address, number, **options)
                for address, number in _addresses(host, port, servers, size)
            ),
            return_exceptions=True,
        )
        clients = [outcome for outcome in outcomes if isinstance(outcome, Client)]
        if len(clients) < size or not any(client.connected for client in clients):
            await asyncio.gather(*(client.close() for client in clients))  # no half-made pool left open
            if len(clients) < size:
                raise next(outcome for outcome in outcomes if isinstance(outcome, BaseException))
            raise _first_error(clients)
        return cls(clients)

    @property
    def clients(self) -> list[Client]:
        """The pool's connections, in rotation order."""
        return list(self._clients)

    @property
    def connected(self) -> int:
        """How many connections are up now."""
        return sum(client.connected for client in self._clients)

    async def call(self, request: Any, timeout: float | None = None) -> Any:
        """Send one request on the next live connection; raises like ``Client.call``."""
        return await _pick(self._clients, self._turn).call(request, timeout)

    async def call_many(self, requests: Sequence[Any], timeout: float | None = None) -> list[Any]:
        """Send a batch on the next live connection; raises like ``Client.call_many``."""
        return await _pick(self._clients, self._turn).call_many(requests, timeout)

    async def call_array(self, records: NDArray[Any], timeout: float | None = None) -> NDArray[Any]:
        """Send an array of records on the next live connection; raises like ``Client.call_array``."""
        return await _pick(self._clients, self._turn).call_array(records, timeout)

    async def close(self) -> None:
        """Close every connection for good; raises nothing."""
        await asyncio.gather(*(client.close() for client in self._clients))

    async def __aenter__(self) -> ClientPool:
        """Use as ``async with await ClientPool.connect(...) as pool``."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the pool."""
        await self.close()


class SyncClientPool:
    """Blocking connections to one or several servers; every method is thread-safe."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 7001,
        size: int = 4,
        *,
        servers: Sequence[tuple[str, int]] | None = None,
        **options: Any,
    ) -> None:
        """Open ``size`` connections over ``servers`` (default: host, port); raises like ``SyncClient``.

        ``options`` are ``SyncClient``'s.  Connections that fail are dialled again in the
        background; only if none can be made does this raise (the first connection's error).
        """
        options = {**options, "retry_on_failed_connect": True}
        self._clients: list[SyncClient] = []
        try:
            for address, number in _addresses(host, port, servers, size):
                self._clients.append(SyncClient(address, number, **options))
        except BaseException:
            self.close()  # no half-made pool left open
            raise
        if not self.connected:
            self.close()
            raise _first_error(self._clients)
        self._turn = itertools.count()

    @property
    def clients(self) -> list[SyncClient]:
        """The pool's connections, in rotation order."""
        return list(self._clients)

    @property
    def connected(self) -> int:
        """How many connections are up now."""
        return sum(client.connected for client in self._clients)

    def call(self, request: Any, timeout: float | None = None) -> Any:
        """Send one request on the next live connection; raises like ``SyncClient.call``."""
        return _pick(self._clients, self._turn).call(request, timeout)

    def call_many(self, requests: Sequence[Any], timeout: float | None = None) -> list[Any]:
        """Send a batch on the next live connection; raises like ``SyncClient.call_many``."""
        return _pick(self._clients, self._turn).call_many(requests, timeout)

    def close(self) -> None:
        """Close every connection for good; raises nothing."""
        for client in self._clients:
            client.close()

    def __enter__(self) -> SyncClientPool:
        """Use as a context manager that closes the pool."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the pool."""
        self.close()
