"""The datagram send queue at its bound, on both kinds of endpoint, with the kernel's refusals faked."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from railcar.apps.echo import DatagramEchoHandler
from railcar.engine.api import Address, DatagramOptions, DatagramStats
from railcar.engine.asyncio_datagram import AsyncioDatagramServer, _ProtocolEndpoint
from railcar.engine.epoll_datagram import _OUT, EpollDatagramServer, _EpollEndpoint

PEER = ("127.0.0.1", 9)


class _FullSocket:
    """A UDP socket whose kernel buffer is full until ``room`` is set."""

    def __init__(self) -> None:
        self.room = False
        self.sent: list[bytes] = []

    def getsockname(self) -> Address:
        return ("127.0.0.1", 1)

    def fileno(self) -> int:
        return 99

    def sendto(self, data: Any, addr: Address) -> int:
        if not self.room:
            raise BlockingIOError
        self.sent.append(bytes(data))
        return len(data)


class _Epoll:
    def __init__(self) -> None:
        self.events = 0

    def modify(self, fd: int, events: int) -> None:
        self.events = events


def test_epoll_queues_what_the_kernel_refuses_and_drops_past_the_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = EpollDatagramServer(DatagramEchoHandler(), DatagramOptions(send_queue=250))
    epoll, sock = _Epoll(), _FullSocket()
    endpoint = _EpollEndpoint(server, sock, epoll)  # type: ignore[arg-type]
    assert [endpoint.send_to(PEER, b"%03d" % i + b"x" * 97) for i in range(4)] == [True, True, True, False]
    assert endpoint.send_queue_size == 300  # the bound is checked before each datagram
    assert epoll.events & _OUT
    assert endpoint.stats.send_dropped == 1
    assert "send queue full (250 bytes)" in caplog.text
    sock.room = True
    endpoint.flush()
    assert [data[:3] for data in sock.sent] == [b"000", b"001", b"002"]
    assert endpoint.send_queue_size == 0
    assert not epoll.events & _OUT
    assert endpoint.stats.sent == 3


class _BufferingTransport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.limits: tuple[int, int] = (0, 0)

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        self.limits = (high, low)

    def sendto(self, data: bytes, addr: Address) -> None:
        self.sent.append(data)


def test_uvloop_drops_while_the_transport_holds_more_than_the_bound(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    options = DatagramOptions(send_queue=1000)

    async def scenario() -> tuple[list[bool], DatagramStats, tuple[int, int]]:
        server = AsyncioDatagramServer(DatagramEchoHandler(), options)
        endpoint = _ProtocolEndpoint(server, ("127.0.0.1", 1))
        transport = _BufferingTransport()
        endpoint.connection_made(transport)  # type: ignore[arg-type]
        results = [endpoint.send_to(PEER, b"a")]
        endpoint.pause_writing()  # what the transport does past its high-water mark
        results.append(endpoint.send_to(PEER, b"b"))
        endpoint.resume_writing()
        results.append(endpoint.send_to(PEER, b"c"))
        return results, endpoint.stats, transport.limits

    results, stats, limits = asyncio.run(scenario())
    assert limits == (1000, 1000)
    assert results == [True, False, True]
    assert (stats.sent, stats.send_dropped) == (2, 1)
    assert "send queue full" in caplog.text
