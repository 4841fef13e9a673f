"""The stress test of the key–value server's original write-up, on kvbin: 1,000 to 8,000 concurrent
clients each SET a key of their own, then GET it back, and every value is checked.

The clients run here, on one uvloop, all connected before any of them sends (so the server
holds every connection at once); the server runs in this process on the engine under test.
The ``threads`` engine (a thread per connection) is stressed at 1,000 clients only: at 8,000
it would hold 8,000 threads here for a few seconds each, which the original's goroutines
afford and the test's time budget does not.
"""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from railcar.apps.kvbin import KvbinHandler
from railcar.engine import create_server
from railcar.engine.api import Server
from railcar.limits import raise_open_file_limit
from railcar.proto.kvbin import GET, OK, SET, Reply, ReplyParser, encode_request

CONNECTS_AT_ONCE = 512
CASES = [
    *(("epoll", clients) for clients in (1000, 2000, 4000, 8000)),
    *(("uvloop", clients) for clients in (1000, 2000, 4000, 8000)),
    ("threads", 1000),
]


class StressClient(asyncio.Protocol):
    """One connection: SET its key, wait for OK, GET it, keep the reply."""

    def __init__(self, index: int) -> None:
        self.key = b"stress:%d" % index
        self.value = b"client %d wrote this value " % index * 2
        self.parser = ReplyParser()
        self.replies: list[Reply] = []
        self.done = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def start(self) -> None:
        assert self.transport is not None
        self.transport.write(encode_request(SET, self.key, self.value))

    def data_received(self, data: bytes) -> None:
        self.replies += self.parser.feed(data)
        if len(self.replies) == 1 and self.replies[0] == Reply(OK, b""):
            assert self.transport is not None
            self.transport.write(encode_request(GET, self.key))
        elif self.replies and not self.done.done():
            self.done.set_result(None)  # the GET's reply, or a SET not stored (the test shows which)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"{self.key!r}: lost after {self.replies}: {exc}"))


async def all_served(server: Server, clients: int) -> None:
    """Until the server holds every client's connection (it accepts them from its backlog)."""
    async with asyncio.timeout(30):
        while server.active_connections < clients:
            await asyncio.sleep(0.01)  # no event says so: the server counts, its engine accepts


async def stress(server: Server, clients: int) -> list[StressClient]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(CONNECTS_AT_ONCE)
    users = [StressClient(index) for index in range(clients)]

    async def connect(user: StressClient) -> None:
        async with gate:
            await loop.create_connection(lambda: user, "127.0.0.1", server.port)

    try:
        await asyncio.gather(*(connect(user) for user in users))
        await all_served(server, clients)
        for user in users:  # every connection is open: now all of them at once
            user.start()
        async with asyncio.timeout(60):
            await asyncio.gather(*(user.done for user in users))
    finally:
        for user in users:
            if user.transport is not None:
                user.transport.close()
    return users


@pytest.mark.parametrize(("engine", "clients"), CASES, ids=[f"{e}-{c}" for e, c in CASES])
def test_concurrent_clients_set_then_get_their_own_keys(engine: str, clients: int) -> None:
    needed = 2 * clients + 200  # both ends of every connection are in this process
    assert raise_open_file_limit(needed) >= needed, f"raise the open-file limit (ulimit -n) to {needed}"
    handler = KvbinHandler()
    server = create_server(handler, engine, port=0)
    server.start()
    try:
        users = uvloop.run(stress(server, clients))
    finally:
        server.stop(deadline=2.0)
    for user in users:
        assert user.replies == [Reply(OK, b""), Reply(OK, user.value)], user.key
    assert len(handler.kv.store.dbs[0].data) == clients
