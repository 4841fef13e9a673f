"""Supervisors under stress: a worker killed under load, workers that keep dying, balancing, pinning."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from railcar import Conn, Handler
from railcar.apps.echo import EchoHandler
from railcar.errors import BindError, WorkersFailed, WorkerStartError
from railcar.workers.supervisor import Supervisor
from tests.helpers import wait_until


class PidEcho(EchoHandler):
    """Says which process serves the connection (a line with its pid), then echoes."""

    def on_open(self, conn: Conn) -> None:
        conn.write(b"%d\n" % os.getpid())


class DiesSoon(EchoHandler):
    """Serves, then its process dies 50 ms later, every time it is started."""

    def on_start(self, server: Any) -> None:
        threading.Timer(0.05, os._exit, args=(3,)).start()


class Broken(Handler):
    def __init__(self) -> None:
        raise RuntimeError("no config")


@pytest.fixture
def supervised() -> Iterator[Any]:
    started: list[Supervisor] = []

    def start(handler: type[Handler], **settings: Any) -> Supervisor:
        supervisor = Supervisor(handler, engine=settings.pop("engine", "epoll"), **settings)
        supervisor.start()
        started.append(supervisor)
        return supervisor

    yield start
    for supervisor in started:
        supervisor.stop(deadline=1.0)


def open_conn(port: int) -> tuple[socket.socket, int]:
    """A connection and the pid of the worker serving it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    line = b""
    while not line.endswith(b"\n"):
        chunk = sock.recv(1)
        assert chunk, "closed before the worker said who it is"
        line += chunk
    return sock, int(line)


def round_trip(sock: socket.socket, payload: bytes = b"ping") -> None:
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(len(payload) - len(got))
        assert chunk, "connection closed"
        got += chunk
    assert got == payload


def closed_by_peer(sock: socket.socket) -> bool:
    """True if the peer has gone: end of file or a reset."""
    try:
        sock.sendall(b"x")
        return sock.recv(1) == b""
    except ConnectionError:
        return True


def test_a_worker_stopped_by_a_sigterm_from_outside_comes_back_without_a_death_reported(
    supervised: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # What a SIGTERM to the whole process group looks like when it reaches a worker before the
    # supervisor's own: the worker stops cleanly, and that is no death to warn about or count.
    supervisor = supervised(PidEcho, workers=2)
    victim = supervisor.worker_pids[0]
    with caplog.at_level(logging.WARNING, logger="railcar"):
        os.kill(victim, signal.SIGTERM)
        assert wait_until(lambda: victim not in supervisor.worker_pids and None not in supervisor.worker_pids)
    assert [record.getMessage() for record in caplog.records] == []
    sock, _ = open_conn(supervisor.port)
    round_trip(sock)
    sock.close()


@pytest.mark.parametrize("architecture", ["sharding", "reactor"])
def test_killed_worker_loses_only_its_connections_and_comes_back(supervised: Any, architecture: str) -> None:
    supervisor = supervised(PidEcho, workers=2, architecture=architecture)
    conns = [open_conn(supervisor.port) for _ in range(16)]
    victim = conns[0][1]
    survivors = [sock for sock, pid in conns if pid != victim]
    assert survivors, "every connection went to one worker"
    failures: list[BaseException] = []
    stop = threading.Event()

    def load() -> None:  # round trips on the survivor's connections throughout
        try:
            while not stop.is_set():
                for sock in survivors:
                    round_trip(sock)
        except BaseException as exc:
            failures.append(exc)

    loader = threading.Thread(target=load)
    loader.start()
    try:
        os.kill(victim, signal.SIGKILL)
        for sock, pid in conns:
            if pid == victim:
                assert closed_by_peer(sock)

        def back() -> bool:
            pids = supervisor.worker_pids
            return victim not in pids and None not in pids

        assert wait_until(back, timeout=10)
        fresh = [open_conn(supervisor.port) for _ in range(16)]
        conns += fresh
        assert {pid for _, pid in fresh} == {pid for pid in supervisor.worker_pids if pid}
    finally:
        stop.set()
        loader.join()
        for sock, _ in conns:
            sock.close()
    assert failures == []


def test_workers_that_keep_dying_make_the_supervisor_give_up(supervised: Any, caplog: Any) -> None:
    supervisor = supervised(DiesSoon, workers=2)
    with pytest.raises(WorkersFailed, match="died 6 times in a row"):
        supervisor.wait(timeout=20)
    restarts = [r.getMessage() for r in caplog.records if "restarting it in" in r.getMessage()]
    assert len(restarts) == 5
    assert "exited with status 3" in restarts[0]
    delays = sorted(float(m.rsplit(" in ", 1)[1].split()[0]) for m in restarts)
    assert delays[:2] == [0.1, 0.1]
    assert 0.4 in delays


def test_a_worker_that_cannot_start_fails_the_start(supervised: Any) -> None:
    with pytest.raises(WorkerStartError, match="RuntimeError: no config"):
        supervised(Broken, workers=2)


def test_reactor_round_robin_alternates_workers(supervised: Any) -> None:
    supervisor = supervised(PidEcho, workers=2, architecture="reactor", balance="round-robin")
    pids = []
    for _ in range(20):
        sock, pid = open_conn(supervisor.port)
        sock.close()
        pids.append(pid)
    assert all(a != b for a, b in itertools.pairwise(pids))
    assert len(set(pids)) == 2


def test_reactor_least_connections_fills_the_worker_that_lost_connections(supervised: Any) -> None:
    supervisor = supervised(PidEcho, workers=2, architecture="reactor", balance="least-connections")
    held = [open_conn(supervisor.port) for _ in range(10)]
    pids = sorted({pid for _, pid in held})
    assert [sum(1 for _, p in held if p == pid) for pid in pids] == [5, 5]
    leaving = [conn for conn in held if conn[1] == pids[0]][:4]
    for sock, _ in leaving:
        sock.close()
    assert wait_until(lambda: supervisor.active_connections == 6)
    more = [open_conn(supervisor.port) for _ in range(6)]
    assert sorted(pid for _, pid in more) == [pids[0]] * 5 + [pids[1]]  # 1 -> 6, then the tie alternates
    for sock, _ in held + more:
        sock.close()


def test_reactor_serves_a_unix_socket(supervised: Any, tmp_path: Any) -> None:
    path = str(tmp_path / "echo.sock")
    supervisor = supervised(EchoHandler, workers=2, architecture="reactor", unix=path)
    assert supervisor.address == path
    for _ in range(4):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(path)
            round_trip(sock, b"over a unix socket")


def test_reactor_source_ip_hash_keeps_one_client_on_one_worker(supervised: Any) -> None:
    supervisor = supervised(PidEcho, workers=2, architecture="reactor", balance="source-ip-hash")
    pids = set()
    for _ in range(10):
        sock, pid = open_conn(supervisor.port)
        sock.close()
        pids.add(pid)
    assert len(pids) == 1


def test_workers_are_pinned_to_a_cpu_each(supervised: Any) -> None:
    supervisor = supervised(EchoHandler, workers=2)
    cpus = sorted(os.sched_getaffinity(0))
    pinned = [os.sched_getaffinity(pid) for pid in supervisor.worker_pids if pid]
    assert pinned == [{cpus[0]}, {cpus[1 % len(cpus)]}]


def test_a_failing_start_up_hook_fails_the_start(supervised: Any) -> None:
    def started(server: Any) -> None:
        raise TimeoutError("lifespan startup took too long")

    with pytest.raises(WorkerStartError, match="TimeoutError: lifespan startup took too long"):
        supervised(EchoHandler, workers=2, started=started)


def test_a_stop_requested_during_the_start_ends_it_cleanly() -> None:
    supervisor = Supervisor(EchoHandler, workers=2, engine="epoll")
    supervisor.request_stop()  # as a signal handler would, before start() has run
    supervisor.start()
    assert supervisor.wait(timeout=10)
    assert supervisor.worker_pids == [None, None]


@pytest.mark.parametrize("datagrams", [False, True])
def test_sharding_workers_refuse_a_port_another_reuse_port_service_holds(
    supervised: Any, datagrams: bool
) -> None:
    kind = socket.SOCK_DGRAM if datagrams else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as other:  # another service, itself sharded
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        if not datagrams:
            other.listen()
        port = other.getsockname()[1]
        with pytest.raises(BindError, match=rf"cannot listen on 127\.0\.0\.1:{port}: address already in use"):
            supervised(EchoHandler, workers=2, port=port, datagrams=datagrams)
