"""The uring engine's own fault cases: exhausted rings, resets, idle crowds, signals, missing support."""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from railcar import Conn, Handler, create_server
from railcar.engine import uring_support
from railcar.errors import EngineUnavailable
from railcar.limits import raise_open_file_limit
from tests.helpers import Recorder, connect, pump_without_reading, recv_exactly, wait_until

REASON = uring_support.missing()
needs_uring = pytest.mark.skipif(REASON is not None, reason=f"uring unavailable: {REASON}")
RAILCAR = [sys.executable, "-m", "railcar"]


@pytest.fixture
def tiny_rings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two 1 KiB receive buffers for every connection and an 8-slot submission queue."""
    from railcar.engine import uring  # noqa: PLC0415 - needs the extension

    monkeypatch.setattr(uring, "RECV_BUFFERS", 2)
    monkeypatch.setattr(uring, "RECV_BUFFER_MAX", 1024)
    monkeypatch.setattr(uring, "RING_ENTRIES", 8)


def _echo_stream(port: int, payload: bytes) -> bytes:
    with connect(port) as sock:
        sending = threading.Thread(target=sock.sendall, args=(payload,))
        sending.start()
        echoed = recv_exactly(sock, len(payload))
        sending.join()
    return echoed


@needs_uring
@pytest.mark.usefixtures("tiny_rings")
def test_an_exhausted_buffer_ring_and_a_full_submission_queue_lose_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "railcar.engine.uring")
    # 40 connections stream through 2 receive buffers and 8 submission slots: receives
    # end with -ENOBUFS and are re-armed, submissions go in early; every byte comes back.
    with create_server(Recorder(), "uring") as server:
        payloads = [os.urandom(64 * 1024 + index) for index in range(40)]
        results: dict[int, bytes] = {}

        def run(index: int) -> None:
            results[index] = _echo_stream(server.port, payloads[index])

        threads = [threading.Thread(target=run, args=(index,)) for index in range(len(payloads))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert all(results.get(index) == payload for index, payload in enumerate(payloads))
    assert "receive buffers ran out" in caplog.text


@needs_uring
def test_a_peer_that_never_reads_is_held_at_the_high_water_mark_and_others_are_served() -> None:
    recorder = Recorder()
    limits = {"high_water": 256 * 1024, "low_water": 64 * 1024, "read_buffer": 64 * 1024}
    with create_server(recorder, "uring", **limits) as server:
        with connect(server.port, rcvbuf=64 * 1024) as stuck:
            sent = pump_without_reading(stuck, 64 * 1024 * 1024)
            assert sent < 64 * 1024 * 1024  # backpressure reached the peer
            # Held input (receives already under way when reading paused) is delivered a
            # receive at a time, so queued output stays within high water plus one read.
            assert recorder.max_write_buffer <= limits["high_water"] + limits["read_buffer"]
            assert _echo_stream(server.port, b"still serving") == b"still serving"


class BigReply(Handler):
    """Answers "big" with 900 KB (under the default high-water mark), anything else with itself."""

    def on_data(self, conn: Conn, data: memoryview) -> None:
        conn.write(bytes(900 * 1024) if bytes(data) == b"big" else data)


@needs_uring
def test_a_send_that_cannot_complete_stalls_neither_the_others_nor_the_stop() -> None:
    server = create_server(BigReply(), "uring")
    server.start()
    try:
        with connect(server.port, rcvbuf=4096) as stuck:
            stuck.sendall(b"big")  # its reply fills the socket buffers and waits: nobody reads it
            time.sleep(0.2)
            assert _echo_stream(server.port, b"still serving") == b"still serving"
    finally:
        started = time.monotonic()
        server.stop(deadline=1.0)
        assert time.monotonic() - started < 5


@needs_uring
def test_resets_mid_send_close_only_their_connections() -> None:
    recorder = Recorder()
    with create_server(recorder, "uring", high_water=64 * 1024, low_water=16 * 1024) as server:
        for _ in range(20):
            sock = connect(server.port, rcvbuf=4096)
            pump_without_reading(sock, 1024 * 1024, stall=0.05)  # the echo is stuck mid-send
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        assert wait_until(lambda: len(recorder.closed) == 20 and server.active_connections == 0, 10)
        assert any(isinstance(exc, OSError) for exc in recorder.closed)
        assert _echo_stream(server.port, b"after the resets") == b"after the resets"


# Opens the idle connections in a process of its own (each side needs 10,000 descriptors),
# pings every 1,000th, and closes them all when told to on stdin.
IDLE_CLIENTS = """
import socket, sys
from railcar.limits import raise_open_file_limit
raise_open_file_limit()
socks = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(int(sys.argv[2]))]
for sock in socks[::1000]:
    sock.sendall(b"x")
    assert sock.recv(1) == b"x"
print("open", flush=True)
sys.stdin.readline()
"""


@needs_uring
def test_ten_thousand_idle_connections_are_served_and_closed() -> None:
    count = 10_000
    if raise_open_file_limit(count + 256) < count + 256:
        pytest.skip(f"needs {count + 256} open files")
    recorder = Recorder()
    with create_server(recorder, "uring") as server:
        with subprocess.Popen(
            [sys.executable, "-c", IDLE_CLIENTS, str(server.port), str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as clients:
            assert clients.stdin is not None
            assert clients.stdout is not None
            try:
                assert clients.stdout.readline() == "open\n"
                assert wait_until(lambda: server.active_connections == count, 20)
                assert _echo_stream(server.port, b"one more") == b"one more"
            finally:
                clients.stdin.write("\n")
                clients.stdin.close()
                clients.wait(30)
        assert wait_until(lambda: len(recorder.closed) == count + 1 and server.active_connections == 0, 20)


@needs_uring
def test_sigterm_stops_within_the_deadline_despite_a_peer_that_never_reads() -> None:
    with subprocess.Popen(
        [*RAILCAR, "serve", "echo", "--engine", "uring", "--port", "0", "--deadline", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().rsplit(":", 1)[1])
        with connect(port, rcvbuf=4096) as stuck, connect(port) as idle:
            pump_without_reading(stuck, 16 * 1024 * 1024)
            idle.sendall(b"ok")
            assert recv_exactly(idle, 2) == b"ok"
            proc.send_signal(signal.SIGTERM)
            try:
                assert proc.wait(timeout=10) == 0
            finally:
                if proc.poll() is None:
                    proc.kill()
            idle.settimeout(5)
            assert idle.recv(10) == b""  # closed, not left hanging
        _, err = proc.communicate(timeout=5)
    assert "Traceback" not in err


def test_without_the_extension_uring_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "railcar.engine._uring", None)  # import fails as if never built
    uring_support.probe.cache_clear()
    try:
        assert "railcar.engine._uring extension is not built" in str(uring_support.missing())
        with pytest.raises(EngineUnavailable, match=r"engine 'uring' is unavailable here: .*liburing-dev"):
            create_server(Handler(), "uring")
        create_server(Handler(), "epoll")  # the rest of railcar is unaffected
    finally:
        uring_support.probe.cache_clear()


def test_serve_without_the_extension_fails_with_one_line_and_exit_2() -> None:
    code = (
        "import sys; sys.modules['railcar.engine._uring'] = None; from railcar.cli import main; "
        "main(['serve', 'echo', '--engine', 'uring', '--port', '0'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "engine 'uring' is unavailable here" in lines[0]
    assert "extension is not built" in lines[0]


def test_engines_lists_every_engine_and_the_io_uring_features() -> None:
    result = subprocess.run([*RAILCAR, "engines"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[4].startswith("uring ")
    expected = "available" if REASON is None else f"unavailable: engine 'uring' is unavailable here: {REASON}"
    assert expected in lines[4]
    assert "io_uring features:" in lines
    assert any(line.split()[:2] == ["multishot", "recv"] for line in lines)
