"""``railcar load --protocol udp-echo``: echoes matched, losses counted as their own kind, bad input."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from railcar import DatagramEndpoint, DatagramHandler, DatagramServer, create_datagram_server
from railcar.apps.echo import DatagramEchoHandler
from railcar.engine.api import Address, Buffer
from tests.load.test_load_cli import load, railcar

SIZE = 64


class _DropsOdd(DatagramHandler):
    """Echoes the load's datagrams with an even sequence number and drops the odd ones (the probe passes)."""

    def __init__(self, corrupt: bool = False) -> None:
        self.echoed = 0
        self.dropped = 0
        self.corrupt = corrupt

    def on_datagram(self, endpoint: DatagramEndpoint, addr: Address, data: Buffer) -> None:
        if len(data) != SIZE:
            endpoint.send_to(addr, data)  # the probe railcar load sends first
            return
        if struct.unpack_from("<Q", data)[0] % 2:
            self.dropped += 1
            return
        self.echoed += 1
        endpoint.send_to(addr, bytes(data[:-1]) + b"!" if self.corrupt else data)


def _serving(handler: DatagramHandler) -> Iterator[DatagramServer]:
    server = create_datagram_server(handler, "uvloop")
    server.start()
    yield server
    server.stop(1.0)


@pytest.fixture
def udp_echo() -> Iterator[DatagramServer]:
    yield from _serving(DatagramEchoHandler())


def test_every_datagram_is_echoed_in_the_closed_loop(udp_echo: DatagramServer) -> None:
    # the open loop is what the loss tests below run
    result = load(udp_echo.port, "--protocol", "udp-echo", "--users", "4", "--procs", "1", "--pipeline", "4")
    assert result["received"] > 0
    assert result["failures"] == 0
    assert result["connected"] == 4


def test_exactly_the_datagrams_the_server_drops_are_lost() -> None:
    handler = _DropsOdd()
    for server in _serving(handler):
        result = load(
            server.port,
            *("--protocol", "udp-echo", "--users", "2", "--procs", "1", "--rate", "400"),
            *("--timeout", "200ms", "--max-failures", "100%"),
        )
    assert handler.dropped > 50
    assert result["failure_kinds"]["lost"] == handler.dropped
    assert result["received"] == handler.echoed
    assert result["failures"] == handler.dropped


def test_a_wrong_echo_is_a_mismatch() -> None:
    handler = _DropsOdd(corrupt=True)
    for server in _serving(handler):
        result = load(
            server.port,
            *("--protocol", "udp-echo", "--users", "1", "--procs", "1", "--rate", "200"),
            *("--timeout", "200ms"),
            status=3,
        )
    assert result["received"] == 0
    assert result["failure_kinds"]["mismatch"] == handler.echoed
    assert result["failure_kinds"]["lost"] == handler.dropped


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "1"], "cannot reach udp 127.0.0.1:1"),
        (["--port", "7000", "--message", "7"], "at least 8 bytes"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    done = railcar("load", "--protocol", "udp-echo", "--connect-timeout", "1s", *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
