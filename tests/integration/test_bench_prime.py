"""Bench servers are primed: one connection opened, used and closed before any load is measured."""

from __future__ import annotations

import subprocess

import pytest

from railcar.bench.external import redis_server, tool
from railcar.bench.prime import exchange
from railcar.bench.procs import running_server
from railcar.errors import RailcarError

ECHO_SERVER = ("railcar", "serve", "echo", "--port", "0")


def test_a_peer_server_has_answered_a_request_before_the_bench_gets_it() -> None:
    with redis_server() as (port, _):
        info = subprocess.run(
            [tool("redis-cli"), "-p", str(port), "INFO", "stats"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    assert "\ntotal_commands_processed:1\n" in info  # the prime's PING; INFO counts once it is done


def test_a_railcar_server_that_fails_its_prime_is_not_measured() -> None:
    with (
        pytest.raises(RailcarError, match=r"^railcar serve echo --port 0 did not answer a first request"),
        running_server(ECHO_SERVER, prime=exchange(b"ping", b"pong")),
    ):
        pytest.fail("a server that failed its prime was handed to the bench")
