"""Both request–response clients behind one blocking face, so a test body runs on each.

The asyncio ``Client`` runs on a loop in a thread of its own; its coroutines are called from
the test's thread and waited for.  ``SyncClient`` is used as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from railcar.reqrep import Client, ClientPool, SyncClient, SyncClientPool

T = TypeVar("T")
CLIENTS = ("async", "sync")


class LoopThread:
    """An event loop running in a daemon thread until closed."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class AsyncClientFace:
    """A ``Client`` (or ``ClientPool``) on a LoopThread, with SyncClient's blocking methods."""

    def __init__(self, loop: LoopThread, client: Client | ClientPool) -> None:
        self.runner = loop
        self.client = client

    def call(self, request: Any, timeout: float | None = None) -> Any:
        return self.runner.run(self.client.call(request, timeout))

    def call_many(self, requests: Any, timeout: float | None = None) -> list[Any]:
        return self.runner.run(self.client.call_many(requests, timeout))

    def close(self) -> None:
        self.runner.run(self.client.close())

    def __getattr__(self, name: str) -> Any:  # in_flight, connected, closed, reconnects, …
        return getattr(self.client, name)


OpenClient = Callable[..., Any]


@pytest.fixture(params=CLIENTS)
def client_kind(request: pytest.FixtureRequest) -> str:
    """Each client, one after the other."""
    return str(request.param)


@pytest.fixture
def open_client(client_kind: str) -> Iterator[OpenClient]:
    """Open clients of the current kind (``SyncClient``'s arguments); closed after the test."""
    loop = LoopThread() if client_kind == "async" else None
    opened: list[Any] = []

    def open_one(port: int, codec: str = "int32", **options: Any) -> Any:
        if loop is None:
            client: Any = SyncClient(port=port, codec=codec, **options)
        else:
            client = AsyncClientFace(loop, loop.run(Client.connect(port=port, codec=codec, **options)))
        opened.append(client)
        return client

    yield open_one
    for client in opened:
        with contextlib.suppress(Exception):
            client.close()
    if loop is not None:
        loop.close()


@pytest.fixture
def open_pool(client_kind: str) -> Iterator[OpenClient]:
    """Open pools of the current kind (``SyncClientPool``'s arguments); closed after the test."""
    loop = LoopThread() if client_kind == "async" else None
    opened: list[Any] = []

    def open_one(**options: Any) -> Any:
        if loop is None:
            pool: Any = SyncClientPool(**options)
        else:
            pool = AsyncClientFace(loop, loop.run(ClientPool.connect(**options)))
        opened.append(pool)
        return pool

    yield open_one
    for pool in opened:
        with contextlib.suppress(Exception):
            pool.close()
    if loop is not None:
        loop.close()


class SilentServer:
    """Accepts and reads, never answers; ``reset()`` drops every connection with RST."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.received = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        self.conns.append(conn)
        while chunk := conn.recv(1 << 20):
            self.received += len(chunk)
        conn.close()  # with SO_LINGER 0 set by reset(): a reset, as when a server process dies

    def reset(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):  # the client may have closed first
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.shutdown(socket.SHUT_RD)  # wakes the reading thread, which closes
        self.listener.close()
        self.thread.join(5)


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.reset()


class DeafServer:
    """Accepts connections and never reads from them: a peer's socket fills and stays full."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.listener.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while self.running:
            with contextlib.suppress(TimeoutError):
                conn, _ = self.listener.accept()
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                self.conns.append(conn)

    def close(self) -> None:
        self.running = False
        self.thread.join(5)
        for conn in self.conns:
            conn.close()
        self.listener.close()


@pytest.fixture
def deaf() -> Iterator[DeafServer]:
    server = DeafServer()
    yield server
    server.close()
