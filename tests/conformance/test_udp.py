"""UDP datagrams on every engine that serves them: echo over IPv4 and IPv6, batches, limits, restarts."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from railcar import (
    DATAGRAM_ENGINES,
    DatagramEndpoint,
    DatagramHandler,
    DatagramServer,
    EngineUnavailable,
    create_datagram_server,
)
from railcar.apps.echo import DatagramEchoHandler
from railcar.engine.api import Address, Buffer, DatagramOptions
from railcar.errors import BindError, ConnectionClosed
from tests.helpers import engine_param, wait_until

DatagramFactory = Callable[..., DatagramServer]


@pytest.fixture(params=[engine_param(name) for name in DATAGRAM_ENGINES])
def serve_udp(request: pytest.FixtureRequest) -> Iterator[DatagramFactory]:
    """Start datagram servers on each datagram engine (port 0) and stop them after the test."""
    servers: list[DatagramServer] = []

    def start(handler: DatagramHandler, **options: Any) -> DatagramServer:
        server = create_datagram_server(handler, str(request.param), **options)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(deadline=1.0)


def client(server: DatagramServer) -> socket.socket:
    family = socket.AF_INET6 if ":" in str(server.address[0]) else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.settimeout(5)
    sock.connect(server.address[:2])
    return sock


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_every_datagram_is_echoed_whole_to_its_sender(serve_udp: DatagramFactory, host: str) -> None:
    server = serve_udp(DatagramEchoHandler(), host=host)
    payloads = [b"", b"x", bytes(range(256)) * 4, b"y" * 65507 if host == "::1" else b"z" * 60000]
    with client(server) as first, client(server) as second:
        for payload in payloads:
            first.send(payload)
            second.send(payload[::-1])
            assert first.recv(70000) == payload
            assert second.recv(70000) == payload[::-1]
    assert wait_until(lambda: server.stats.sent == 2 * len(payloads))
    assert server.stats.received == 2 * len(payloads)


class _Burst(DatagramHandler):
    """Answers ``N`` (a number) with N numbered datagrams sent in one batch."""

    def on_datagram(self, endpoint: DatagramEndpoint, addr: Address, data: Buffer) -> None:
        count = int(bytes(data))
        assert endpoint.send_many((addr, b"%d" % i) for i in range(count)) == count


def test_a_batch_is_sent_in_order(serve_udp: DatagramFactory) -> None:
    server = serve_udp(_Burst())
    with client(server) as sock:
        sock.send(b"100")
        assert [sock.recv(100) for _ in range(100)] == [b"%d" % i for i in range(100)]


def test_oversized_datagrams_are_counted_logged_and_dropped(
    serve_udp: DatagramFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "railcar.engine.datagram")
    server = serve_udp(DatagramEchoHandler(), max_datagram=100)
    with client(server) as sock:
        for payload in (b"a" * 101, b"b" * 65507, b"c" * 100):
            sock.send(payload)
        assert sock.recv(70000) == b"c" * 100  # the one within the limit, whole
    assert wait_until(lambda: server.stats.oversized == 2)
    assert server.stats.received == 1
    assert "datagrams over 100 bytes dropped" in caplog.text  # once: the log is rate-limited


class _Failing(DatagramHandler):
    def on_datagram(self, endpoint: DatagramEndpoint, addr: Address, data: Buffer) -> None:
        if data == b"big":
            endpoint.send_to(addr, b"x" * 11)  # over max_datagram: ValueError
        raise RuntimeError("handler bug")


def test_a_failing_handler_loses_only_its_datagram(serve_udp: DatagramFactory) -> None:
    server = serve_udp(_Failing(), max_datagram=10)
    with client(server) as sock:
        sock.send(b"big")
        sock.send(b"bug")
    assert wait_until(lambda: server.stats.handler_errors == 2)
    assert server.stats.sent == 0


def test_restart_serves_again_with_fresh_counters(serve_udp: DatagramFactory) -> None:
    server = serve_udp(DatagramEchoHandler())
    endpoint = server.endpoint
    with client(server) as sock:
        sock.send(b"one")
        assert sock.recv(10) == b"one"
    server.stop()
    assert endpoint.closed
    with pytest.raises(ConnectionClosed):
        endpoint.send_to(("127.0.0.1", 9), b"late")
    with pytest.raises(RuntimeError):
        _ = server.endpoint
    server.start()
    assert server.stats.received == 0
    with client(server) as sock:
        sock.send(b"two")
        assert sock.recv(10) == b"two"


def test_a_bound_socket_is_served_and_stays_the_callers(serve_udp: DatagramFactory) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as bound:
        bound.bind(("127.0.0.1", 0))
        server = serve_udp(DatagramEchoHandler(), sock=bound)
        assert server.address == bound.getsockname()
        with client(server) as sock:
            sock.send(b"via sock")
            assert sock.recv(10) == b"via sock"
        server.stop()
        assert bound.fileno() != -1


def test_the_threads_engine_says_it_serves_no_datagrams() -> None:
    with pytest.raises(EngineUnavailable, match="does not serve datagrams"):
        create_datagram_server(DatagramEchoHandler(), "threads")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_datagram": 0}, "max_datagram"),
        ({"max_datagram": 65528}, "max_datagram"),
        ({"send_queue": -1}, "send_queue"),
        ({"port": 70000}, "port"),
    ],
)
def test_bad_options_raise_value_error(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DatagramOptions(**options)


def test_a_stream_socket_is_refused() -> None:
    with socket.socket() as tcp, pytest.raises(ValueError, match="datagram socket"):
        DatagramOptions(sock=tcp)


def test_a_port_in_use_is_a_bind_error(serve_udp: DatagramFactory) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        with pytest.raises(BindError, match="address already in use"):
            serve_udp(DatagramEchoHandler(), port=taken.getsockname()[1])
