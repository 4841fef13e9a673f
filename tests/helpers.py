"""Handlers and socket helpers used by the tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from railcar import Conn, Handler
from railcar.engine import unavailable


def engine_param(name: str) -> Any:
    """An engine as a test parameter, skipped with the reason where it cannot run here (uring)."""
    reason = unavailable(name) if name == "uring" else None
    return pytest.param(name, marks=pytest.mark.skip(reason=reason)) if reason else name


class Recorder(Handler):
    """Echoes, and records what the engine told it (thread-safe for the threads engine)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.opened = 0
        self.closed: list[BaseException | None] = []
        self.conns: list[Conn] = []
        self.started = threading.Event()
        self.max_write_buffer = 0
        self.writable_calls = 0
        self.writing_since: float | None = None  # when a write still in progress began (threads engine)

    def on_start(self, server: object) -> None:
        self.started.set()

    def on_open(self, conn: Conn) -> None:
        with self.lock:
            self.opened += 1
            self.conns.append(conn)

    def on_data(self, conn: Conn, data: memoryview) -> None:
        self.writing_since = time.monotonic()
        try:
            conn.write(data)
        finally:
            self.writing_since = None
        size = conn.write_buffer_size
        if size > self.max_write_buffer:
            self.max_write_buffer = size

    def on_writable(self, conn: Conn) -> None:
        self.writable_calls += 1

    def on_close(self, conn: Conn, exc: BaseException | None) -> None:
        with self.lock:
            self.closed.append(exc)


def output_stuck(recorder: Recorder, for_at_least: float = 0.3) -> bool:
    """True when the server holds output it cannot send: queued, or a write blocked that long."""
    since = recorder.writing_since
    blocked = since is not None and time.monotonic() - since > for_at_least
    return blocked or any(conn.write_buffer_size > 0 for conn in recorder.conns)


def connect(port: int, timeout: float = 10.0, rcvbuf: int | None = None) -> socket.socket:
    """A blocking client socket to 127.0.0.1:port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    return sock


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    """Read exactly ``size`` bytes or fail on EOF."""
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        assert chunk, "connection closed early"
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def recv_until_eof(sock: socket.socket) -> bytes:
    """Read until the peer closes."""
    chunks = []
    while chunk := sock.recv(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return condition()
        time.sleep(0.005)
    return True


def pump_without_reading(sock: socket.socket, limit: int, stall: float = 0.5) -> int:
    """Send up to ``limit`` bytes without reading, until sending stalls; return bytes sent."""
    sock.setblocking(False)
    chunk = b"s" * 65536
    sent = 0
    last_progress = time.monotonic()
    while sent < limit and time.monotonic() - last_progress < stall:
        try:
            count = sock.send(chunk[: limit - sent])
        except BlockingIOError:
            time.sleep(0.01)
            continue
        sent += count
        last_progress = time.monotonic()
    sock.setblocking(True)
    return sent
