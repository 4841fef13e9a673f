"""UDP under sharding workers: each worker its own SO_REUSEPORT socket, the kernel spreading the senders."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from railcar import DatagramEndpoint, DatagramHandler
from railcar.apps.echo import EchoHandler
from railcar.engine.api import Address, Buffer
from railcar.errors import WorkerStartError
from railcar.procs import Command, child_pids
from railcar.workers.supervisor import Supervisor
from tests.helpers import engine_param

CLIENTS = 64  # all on one worker of two: a chance of 2 in 2**64


class PidEcho(DatagramHandler):
    """Answers each datagram with the serving worker's pid, a colon and the datagram."""

    def on_datagram(self, endpoint: DatagramEndpoint, addr: Address, data: Buffer) -> None:
        endpoint.send_to(addr, b"%d:%s" % (os.getpid(), data))


@pytest.fixture
def supervised() -> Iterator[Any]:
    started: list[Supervisor] = []

    def start(handler: Any, **settings: Any) -> Supervisor:
        supervisor = Supervisor(handler, workers=2, datagrams=True, **settings)
        supervisor.start()
        started.append(supervisor)
        return supervisor

    yield start
    for supervisor in started:
        supervisor.stop(deadline=1.0)


def echo_from_many_sockets(port: int) -> dict[int, int]:
    """Send 3 datagrams from each of CLIENTS sockets; check every echo; return datagrams served per pid."""
    served: dict[int, int] = {}
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(CLIENTS)]
    try:
        for index, sock in enumerate(sockets):
            sock.settimeout(5)
            sock.connect(("127.0.0.1", port))
            for n in range(3):
                sock.send(b"%d-%d" % (index, n))
        for index, sock in enumerate(sockets):
            replies = sorted(sock.recv(100).split(b":", 1) for _ in range(3))
            assert [data for _, data in replies] == [b"%d-%d" % (index, n) for n in range(3)]
            for pid, _ in replies:
                served[int(pid)] = served.get(int(pid), 0) + 1
    finally:
        for sock in sockets:
            sock.close()
    return served


@pytest.mark.parametrize("engine", [engine_param("epoll"), engine_param("uring")])
def test_every_datagram_is_echoed_and_both_workers_serve_some(supervised: Any, engine: str) -> None:
    supervisor = supervised(PidEcho, engine=engine)
    served = echo_from_many_sockets(supervisor.port)
    assert sum(served.values()) == 3 * CLIENTS
    assert set(served) == set(supervisor.worker_pids)  # both workers, and nobody else (the reservation)


def test_a_stream_handler_under_datagrams_fails_the_start_in_one_line(supervised: Any) -> None:
    with pytest.raises(WorkerStartError, match="serving datagrams needs a DatagramHandler, got EchoHandler"):
        supervised(EchoHandler, engine="epoll")


def test_serve_echo_udp_with_workers_echoes_and_stops_on_sigterm() -> None:
    argv = [sys.executable, "-m", "railcar", "serve", "echo", "--udp", "--engine", "epoll", "--port", "0"]
    server = Command([*argv, "--workers", "2", "--deadline", "1"], stdout=subprocess.PIPE, text=True).start()
    try:
        line = server.first_line(timeout=20)
        assert line.startswith("listening on 127.0.0.1:"), line
        workers = child_pids(server.pid)
        assert len(workers) == 2
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.sendto(b"hello workers", ("127.0.0.1", int(line.rsplit(":", 1)[1])))
            assert sock.recv(100) == b"hello workers"
        server.signal(signal.SIGTERM)
        assert server.proc.wait(timeout=10) == 0
    finally:
        server.stop()
