"""A real redis-server for the differential tests (a missing one fails, naming its install command)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from railcar.bench.external import redis_server


@pytest.fixture(scope="session")
def redis_port() -> Iterator[int]:
    """The port of a redis-server (no persistence) on loopback, for the whole session."""
    with redis_server() as (port, _pid):
        yield port
