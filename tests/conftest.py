"""Fixtures shared by every test: engines by name and servers that stop themselves."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import settings

from railcar import ENGINES, Handler, Server, create_server
from railcar.bench.external import redis_server
from railcar.limits import raise_open_file_limit
from tests.helpers import engine_param

raise_open_file_limit()

# Property tests assert behaviour, not speed: on a busy 2-CPU machine one example can take
# 250 ms, and hypothesis's per-example deadline would fail a correct test.
settings.register_profile("railcar", deadline=None)
settings.load_profile("railcar")

ServerFactory = Callable[..., Server]


@pytest.fixture(params=[engine_param(name) for name in ENGINES])
def engine(request: pytest.FixtureRequest) -> str:
    """Every engine, one after the other."""
    return str(request.param)


@pytest.fixture
def serve(engine: str) -> Iterator[ServerFactory]:
    """Start servers on the current engine (port 0) and stop them after the test."""
    servers: list[Server] = []

    def start(handler: Handler, **options: Any) -> Server:
        server = create_server(handler, engine, **options)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(deadline=1.0)


@pytest.fixture(scope="session")
def redis_port() -> Iterator[int]:
    """A real redis-server (no persistence) on a free loopback port; missing, it fails naming its install."""
    with redis_server() as (port, _pid):
        yield port
