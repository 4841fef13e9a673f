"""One asyncio connection of a client: its transport's events, passed to the client that dialled it."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol, cast

from railcar.errors import ConnectionLost


class Owner(Protocol):
    """What a client offers its connections (a replaced connection's events it ignores)."""

    def _on_data(self, connection: Any, data: bytes) -> None: ...

    def _wake_waiters(self) -> None: ...

    def _on_lost(self, connection: Any, error: BaseException) -> None: ...


class ClientConnection(asyncio.Protocol):
    """Bytes go to the client, write pauses are kept in ``paused``, and the loss is told once."""

    def __init__(self, client: Owner) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.paused = False
        self.lost = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio subclasses

    def data_received(self, data: bytes) -> None:
        """Hand the bytes to the client."""
        self.client._on_data(self, data)

    def pause_writing(self) -> None:
        """The transport holds more than its high-water mark: callers wait."""
        self.paused = True

    def resume_writing(self) -> None:
        """The transport drained: wake the callers waiting."""
        self.paused = False
        self.client._wake_waiters()

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail what this connection carried and tell the client, once."""
        self.lost = True
        error = self.lost_error(exc)
        self.fail(error)
        self.client._on_lost(self, error)
        if not self.closed.done():
            self.closed.set_result(None)

    def lost_error(self, exc: Exception | None) -> ConnectionLost:
        """Why the connection ended, for the calls it carried."""
        return ConnectionLost(f"connection lost: {exc}" if exc else "connection closed by peer")

    def fail(self, error: BaseException) -> None:
        """Fail what waits on this connection alone (none here); the client fails the rest."""
