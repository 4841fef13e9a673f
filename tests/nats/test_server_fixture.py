"""The nats-server fixture starts a real server that speaks NATS, and stops it after the module."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable

from tests.nats.server import NatsServer, nats_server_binary


def test_binary_is_found() -> None:
    assert nats_server_binary().endswith("nats-server")


def test_server_sends_info(nats_server: NatsServer) -> None:
    with socket.create_connection(("127.0.0.1", nats_server.port), timeout=5) as sock:
        line = sock.makefile("rb").readline()
    assert line.startswith(b"INFO ")
    assert json.loads(line[5:])["port"] == nats_server.port


def test_restart_keeps_the_port(start_nats: Callable[..., NatsServer]) -> None:
    server = start_nats()
    port = server.port
    server.kill()
    server.start()
    assert server.port == port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        assert sock.makefile("rb").readline().startswith(b"INFO ")
