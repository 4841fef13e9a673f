"""Echo correctness on every engine: chunking, large messages, half-close, many connections."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from railcar.apps.echo import EchoHandler
from tests.conftest import ServerFactory
from tests.helpers import Recorder, connect, recv_exactly, recv_until_eof, wait_until


@pytest.fixture
def echo_port(serve: ServerFactory) -> int:
    """One echo server shared by every example of a property test (it keeps no state)."""
    return serve(EchoHandler()).port


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(payload=st.binary(min_size=1, max_size=200_000), cuts=st.lists(st.integers(0, 200_000)))
def test_echo_survives_any_chunking(echo_port: int, payload: bytes, cuts: list[int]) -> None:
    bounds = sorted({0, len(payload), *(c % (len(payload) + 1) for c in cuts)})
    with connect(echo_port) as sock:
        for start, end in itertools.pairwise(bounds):
            sock.sendall(payload[start:end])
        sock.shutdown(socket.SHUT_WR)
        assert recv_until_eof(sock) == payload


def test_multi_megabyte_message_round_trips(serve: ServerFactory) -> None:
    server = serve(EchoHandler())
    payload = os.urandom(3 * 1024 * 1024 + 17)
    with connect(server.port) as sock:
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        echoed = recv_exactly(sock, len(payload))
        sender.join()
    assert echoed == payload


def test_half_close_gets_every_echo_then_eof(serve: ServerFactory) -> None:
    recorder = Recorder()
    server = serve(recorder)
    with connect(server.port) as sock:
        sock.sendall(b"first ")
        sock.sendall(b"and last")
        sock.shutdown(socket.SHUT_WR)
        assert recv_until_eof(sock) == b"first and last"
    assert wait_until(lambda: recorder.closed == [None])
    assert server.active_connections == 0


def test_thousand_concurrent_connections(serve: ServerFactory) -> None:
    server = serve(EchoHandler())
    count = 1000
    open_when_all_echoed: list[int] = []

    async def one(index: int, all_echoed: asyncio.Event, echoed: list[int]) -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        message = f"connection {index:04d}\n".encode()
        writer.write(message)
        reply = await reader.readexactly(len(message))
        echoed.append(index)
        if len(echoed) == count:
            open_when_all_echoed.append(server.active_connections)
            all_echoed.set()
        await all_echoed.wait()
        writer.close()
        await writer.wait_closed()
        return reply == message

    async def main() -> list[bool]:
        all_echoed = asyncio.Event()
        echoed: list[int] = []
        return list(await asyncio.gather(*(one(i, all_echoed, echoed) for i in range(count))))

    assert all(asyncio.run(main()))
    assert open_when_all_echoed == [count]
    assert wait_until(lambda: server.active_connections == 0, timeout=10)


def test_unix_socket_echo(engine: str, serve: ServerFactory, tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "echo.sock")
    server = serve(EchoHandler(), unix=path)
    assert server.address == path
    assert server.port == 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(b"over a unix socket")
        assert recv_exactly(sock, 18) == b"over a unix socket"


def test_ipv6_loopback_echo(serve: ServerFactory) -> None:
    server = serve(EchoHandler(), host="::1")
    with socket.create_connection(("::1", server.port), timeout=5) as sock:
        sock.sendall(b"v6")
        assert recv_exactly(sock, 2) == b"v6"
