"""The uring engine's datagram faults: an exhausted buffer ring, a full submission queue, the send bound."""

from __future__ import annotations

import logging
import socket
import threading

import pytest

from railcar import DatagramEndpoint, DatagramHandler, create_datagram_server
from railcar.apps.echo import DatagramEchoHandler
from railcar.engine import uring_support
from railcar.engine.api import Address, Buffer
from tests.helpers import wait_until

REASON = uring_support.missing()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"uring unavailable: {REASON}")


@pytest.fixture
def tiny_rings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two receive buffers and an 8-slot submission queue."""
    from railcar.engine import uring_datagram  # noqa: PLC0415 - needs the extension

    monkeypatch.setattr(uring_datagram, "RECV_BUFFERS", 2)
    monkeypatch.setattr(uring_datagram, "RING_ENTRIES", 8)


@pytest.mark.usefixtures("tiny_rings")
def test_an_exhausted_buffer_ring_and_a_full_submission_queue_lose_no_datagram(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "railcar.engine.datagram")
    with create_datagram_server(DatagramEchoHandler(), "uring") as server:
        # Hold the loop while 100 datagrams queue up in the socket: its next turn finds
        # them behind 2 buffers, so the receive ends with -ENOBUFS again and again.
        held, release = threading.Event(), threading.Event()
        server.call_soon_threadsafe(lambda: (held.set(), release.wait(10)))
        assert held.wait(5)
        clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(20)]
        try:
            for index, sock in enumerate(clients):
                sock.settimeout(5)
                sock.connect(server.address)
                for n in range(5):
                    sock.send(b"%d:%d" % (index, n))
            release.set()
            for index, sock in enumerate(clients):
                assert sorted(sock.recv(100) for _ in range(5)) == [b"%d:%d" % (index, n) for n in range(5)]
        finally:
            for sock in clients:
                sock.close()
        assert wait_until(lambda: server.stats.sent == 100)
        assert server.stats.received == 100
    assert "receive buffers ran out" in caplog.text


class _Flood(DatagramHandler):
    """Answers any datagram with 5,000 in one call, more than the ring has send slots."""

    def __init__(self) -> None:
        self.accepted = 0

    def on_datagram(self, endpoint: DatagramEndpoint, addr: Address, data: Buffer) -> None:
        self.accepted = sum(endpoint.send_to(addr, b"%d" % i) for i in range(5000))


def test_sends_past_the_slots_in_flight_are_dropped_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    from railcar.engine._uring import SEND_SLOTS  # noqa: PLC0415 - needs the extension

    caplog.set_level(logging.WARNING, "railcar.engine.datagram")
    handler = _Flood()
    with create_datagram_server(handler, "uring") as server:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.connect(server.address)
            sock.send(b"go")
            assert sock.recv(10) == b"0"
        assert wait_until(lambda: server.stats.sent + server.stats.send_dropped == 5000)
        assert handler.accepted == server.stats.sent == SEND_SLOTS
        assert server.stats.send_dropped == 5000 - SEND_SLOTS
        assert wait_until(lambda: server.endpoint.send_queue_size == 0)  # every slot came back
    assert "datagrams dropped" in caplog.text
