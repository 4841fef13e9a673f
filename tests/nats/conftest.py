"""Fixtures for the NATS client tests: one real nats-server per test module, stopped after it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.nats.server import NatsServer

StartNats = Callable[..., NatsServer]


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsServer]:
    """A plain nats-server on a free loopback port, shared by the tests of one module."""
    server = NatsServer().start()
    yield server
    server.close()


@pytest.fixture
def start_nats() -> Iterator[Callable[..., NatsServer]]:
    """Start extra servers (a config, a fixed port) for one test; every one is stopped after it."""
    servers: list[NatsServer] = []

    def start(config: str = "", port: int = -1) -> NatsServer:
        server = NatsServer(config, port).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
