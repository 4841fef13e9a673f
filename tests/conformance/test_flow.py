"""Backpressure and flow control on every engine: slow readers, resets, pausing."""

from __future__ import annotations

import os
import socket
import struct
import time

import pytest

from railcar import Conn, ConnectionClosed, Handler
from railcar.apps.echo import EchoHandler
from tests.conftest import ServerFactory
from tests.helpers import Recorder, connect, pump_without_reading, recv_exactly, wait_until

LIMITS = {"high_water": 256 * 1024, "low_water": 64 * 1024, "read_buffer": 64 * 1024}


def test_slow_reader_keeps_server_output_bounded_and_loses_nothing(serve: ServerFactory) -> None:
    recorder = Recorder()
    server = serve(recorder, **LIMITS)
    offered = 256 * 1024 * 1024
    with connect(server.port, rcvbuf=64 * 1024) as sock:
        sent = pump_without_reading(sock, offered)
        # Backpressure reached the client: it could not push everything in.
        assert sent < offered
        assert recorder.max_write_buffer <= LIMITS["high_water"] + LIMITS["read_buffer"]
        assert recv_exactly(sock, sent) == b"s" * sent
    assert wait_until(lambda: server.active_connections == 0)


def test_on_writable_follows_drained_backpressure(engine: str, serve: ServerFactory) -> None:
    if engine == "threads":
        pytest.skip("threads engine: writes block in the kernel, output never queues")
    recorder = Recorder()
    server = serve(recorder, **LIMITS)
    with connect(server.port, rcvbuf=64 * 1024) as sock:
        sent = pump_without_reading(sock, 256 * 1024 * 1024)
        (conn,) = recorder.conns
        assert not conn.writable
        assert not conn.reading
        assert recv_exactly(sock, sent) == b"s" * sent
        assert wait_until(lambda: recorder.writable_calls >= 1)
        assert conn.writable
        assert conn.reading


def test_peer_reset_mid_write_closes_only_that_connection(serve: ServerFactory) -> None:
    recorder = Recorder()
    server = serve(recorder, **LIMITS)
    with connect(server.port) as bystander:
        victim = connect(server.port, rcvbuf=64 * 1024)
        pump_without_reading(victim, 256 * 1024 * 1024)
        victim.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        victim.close()  # RST while the server still has output queued for it
        assert wait_until(lambda: len(recorder.closed) == 1)
        assert isinstance(recorder.closed[0], OSError)
        bystander.sendall(b"still here")
        assert recv_exactly(bystander, 10) == b"still here"
        assert server.active_connections == 1


class PauseOnOpen(Handler):
    def __init__(self) -> None:
        self.conn: Conn | None = None
        self.received = bytearray()

    def on_open(self, conn: Conn) -> None:
        conn.pause_reading()
        self.conn = conn

    def on_data(self, conn: Conn, data: memoryview) -> None:
        self.received += data
        conn.write(data)


class PauseOnOpenTakingBytes(PauseOnOpen):
    """The same, for a handler that takes bytes (uvloop then reads on its plain Protocol path)."""

    takes_bytes = True


@pytest.mark.parametrize("handler_class", [PauseOnOpen, PauseOnOpenTakingBytes])
def test_pause_and_resume_reading(serve: ServerFactory, handler_class: type[PauseOnOpen]) -> None:
    handler = handler_class()
    server = serve(handler)
    with connect(server.port) as sock:
        sock.sendall(b"held back")
        assert wait_until(lambda: handler.conn is not None)
        time.sleep(0.3)
        assert handler.received == b""
        assert handler.conn is not None
        assert not handler.conn.reading
        server.call_soon_threadsafe(handler.conn.resume_reading)
        assert recv_exactly(sock, 9) == b"held back"
        assert handler.received == b"held back"


class CloseThenWrite(Handler):
    def __init__(self) -> None:
        self.error: BaseException | None = None

    def on_data(self, conn: Conn, data: memoryview) -> None:
        conn.write(b"bye")
        conn.close()
        assert conn.closed
        try:
            conn.write(b"too late")
        except ConnectionClosed as exc:
            self.error = exc


def test_write_after_close_raises_connection_closed(serve: ServerFactory) -> None:
    handler = CloseThenWrite()
    server = serve(handler)
    with connect(server.port) as sock:
        sock.sendall(b"x")
        assert sock.recv(100) == b"bye"
        assert sock.recv(100) == b""
    assert wait_until(lambda: isinstance(handler.error, ConnectionClosed))


class ReplyAfterEof(Handler):
    def on_data(self, conn: Conn, data: memoryview) -> None:
        conn.context.setdefault("seen", bytearray()).extend(data)

    def on_eof(self, conn: Conn) -> bool:
        conn.write(b"you sent " + bytes(conn.context["seen"]))
        conn.close()
        return True


def test_handler_may_answer_after_peer_eof(serve: ServerFactory) -> None:
    server = serve(ReplyAfterEof())
    with connect(server.port) as sock:
        sock.sendall(b"a question")
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(100):
            chunks.append(chunk)
    assert b"".join(chunks) == b"you sent a question"


class NoDelayProbe(EchoHandler):
    def __init__(self) -> None:
        self.seen: list[int] = []

    def on_open(self, conn: Conn) -> None:
        with socket.socket(fileno=os.dup(conn.fileno())) as sock:
            self.seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


@pytest.mark.parametrize("nodelay", [True, False])
def test_tcp_nodelay_follows_the_option(serve: ServerFactory, nodelay: bool) -> None:
    probe = NoDelayProbe()
    server = serve(probe, nodelay=nodelay)
    with connect(server.port) as sock:
        sock.sendall(b"x")
        assert recv_exactly(sock, 1) == b"x"
    assert [bool(flag) for flag in probe.seen] == [nodelay]
