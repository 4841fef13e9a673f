"""Start, stop and failure handling on every engine."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import threading
import time
from collections.abc import Awaitable

import pytest

from railcar import BindError, Conn, Handler, InboundOverflow, Server, create_server
from railcar.apps.echo import EchoHandler
from tests.conftest import ServerFactory
from tests.helpers import Recorder, connect, output_stuck, pump_without_reading, recv_exactly, wait_until


def test_port_zero_reports_the_bound_port_and_calls_on_start(serve: ServerFactory) -> None:
    recorder = Recorder()
    server = serve(recorder)
    assert server.port > 0
    assert server.address[:2] == ("127.0.0.1", server.port)
    assert recorder.started.wait(5)


class LoopProbe(Handler):
    """Records, in on_start, the server's ``loop`` and the asyncio loop running the handler, if any."""

    def __init__(self) -> None:
        self.seen: list[tuple[asyncio.AbstractEventLoop | None, asyncio.AbstractEventLoop | None]] = []

    def on_start(self, server: Server) -> None:
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        self.seen.append((server.loop, running))


def test_server_loop_is_the_loop_the_handlers_run_on(serve: ServerFactory) -> None:
    probe = LoopProbe()
    server = serve(probe)
    assert wait_until(lambda: bool(probe.seen))
    [(loop, running)] = probe.seen
    assert loop is running
    assert (loop is not None) is type(server).has_loop
    server.stop(deadline=1.0)
    assert server.loop is None


def test_graceful_stop_closes_open_connections(engine: str) -> None:
    recorder = Recorder()
    server = create_server(recorder, engine)
    server.start()
    clients = [connect(server.port) for _ in range(5)]
    for client in clients:
        client.sendall(b"ping")
        assert recv_exactly(client, 4) == b"ping"
    assert wait_until(lambda: server.active_connections == 5)
    started = time.monotonic()
    server.stop(deadline=2.0)
    assert time.monotonic() - started < 2.0
    for client in clients:
        assert client.recv(10) == b""
        client.close()
    assert server.active_connections == 0
    assert recorder.closed == [None] * 5


def test_stop_gives_up_on_stuck_output_at_the_deadline(engine: str) -> None:
    recorder = Recorder()
    server = create_server(recorder, engine, high_water=256 * 1024, read_buffer=64 * 1024)
    server.start()
    with connect(server.port, rcvbuf=64 * 1024) as stuck:
        pump_without_reading(stuck, 256 * 1024 * 1024)
        # A stall of the client's sends alone does not prove it: in about one conformance run
        # in four the threads server was then waiting to read, not blocked writing.
        assert wait_until(lambda: output_stuck(recorder), 5)
        started = time.monotonic()
        server.stop(deadline=0.5)
        elapsed = time.monotonic() - started
    assert elapsed < 3.0
    # The threads engine writes in the kernel: a send blocked for seconds was seen to complete
    # as stop() shut the read side (about one conformance run in five); the output then left,
    # the connection closed cleanly, and stop rightly did not wait for the deadline.
    assert elapsed > 0.4 or (engine == "threads" and recorder.closed == [None])
    assert server.active_connections == 0
    assert len(recorder.closed) == 1


def test_stop_closes_a_connection_accepted_while_stopping(engine: str) -> None:
    recorder = Recorder()
    server = create_server(recorder, engine)
    server.start()
    # Hold the engine's thread so that the connection waits in the listen backlog and stop()
    # is queued behind it: the engine then sees the accept and the stop in the same turn.
    # (The threads engine runs call_soon_threadsafe inline: only the helper thread waits.)
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        entered.set()
        release.wait(5)

    holder = threading.Thread(target=server.call_soon_threadsafe, args=(hold,))
    holder.start()
    assert entered.wait(5)
    client = connect(server.port, timeout=3.0)
    stopper = threading.Thread(target=server.stop, kwargs={"deadline": 2.0})
    stopper.start()
    time.sleep(0.2)  # let stop() queue its shutdown behind hold()
    release.set()
    stopper.join(10)
    holder.join(5)
    assert not stopper.is_alive()
    with client, contextlib.suppress(ConnectionResetError):  # refused before accept: a reset
        assert client.recv(10) == b""
    assert server.active_connections == 0
    assert len(recorder.closed) == recorder.opened


def test_bind_to_a_port_in_use_raises_bind_error(engine: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = create_server(EchoHandler(), engine, port=taken.getsockname()[1])
        with pytest.raises(BindError, match="address already in use"):
            server.start()


def test_unknown_host_raises_bind_error(engine: str) -> None:
    server = create_server(EchoHandler(), engine, host="no-such-host.invalid")
    with pytest.raises(BindError, match="unknown host"):
        server.start()


class Explodes(EchoHandler):
    def on_data(self, conn: Conn, data: memoryview) -> None:
        if bytes(data) == b"boom":
            raise RuntimeError("handler bug")
        conn.write(data)


def test_handler_exception_closes_only_its_connection(
    serve: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(Explodes())
    with caplog.at_level(logging.ERROR, logger="railcar.engine"):
        with connect(server.port) as healthy, connect(server.port) as doomed:
            healthy.sendall(b"before")
            assert recv_exactly(healthy, 6) == b"before"
            doomed.sendall(b"boom")
            with contextlib.suppress(ConnectionResetError):
                assert doomed.recv(10) == b""
            healthy.sendall(b"after")
            assert recv_exactly(healthy, 5) == b"after"
        assert wait_until(lambda: server.active_connections == 0)
    assert any("handler failed" in r.message for r in caplog.records)
    assert any(r.exc_info and "handler bug" in str(r.exc_info[1]) for r in caplog.records)


class LengthPrefixed(Handler):
    """A pull-mode handler: u32 length + payload frames, answered reversed."""

    buffered = True

    def __init__(self) -> None:
        self.frames = 0

    def on_data(self, conn: Conn, data: memoryview) -> None:
        assert conn.inbound_buffered == len(data)
        while conn.inbound_buffered >= 4:
            (length,) = struct.unpack("<I", conn.peek(4))
            if conn.inbound_buffered < 4 + length:
                return
            assert conn.discard(4) == 4
            payload = conn.next(length)
            self.frames += 1
            conn.write(struct.pack("<I", length) + payload[::-1])


def test_pull_mode_handler_consumes_from_the_inbound_buffer(serve: ServerFactory) -> None:
    handler = LengthPrefixed()
    server = serve(handler)
    frames = [bytes(range(n % 256)) * (1 + n // 256) for n in range(0, 3000, 97)]
    stream = b"".join(struct.pack("<I", len(f)) + f for f in frames)
    with connect(server.port) as sock:
        for start in range(0, len(stream), 333):
            sock.sendall(stream[start : start + 333])
            time.sleep(0.0005)
        for frame in frames:
            (length,) = struct.unpack("<I", recv_exactly(sock, 4))
            assert recv_exactly(sock, length) == frame[::-1]
    assert handler.frames == len(frames)


class Hoarder(Handler):
    """Pull mode, never consumes: must hit the inbound limit, not grow without bound."""

    buffered = True

    def __init__(self) -> None:
        self.closed: list[BaseException | None] = []

    def on_close(self, conn: Conn, exc: BaseException | None) -> None:
        self.closed.append(exc)


def test_pull_mode_inbound_limit_closes_the_connection(
    serve: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    hoarder = Hoarder()
    server: Server = serve(hoarder, read_buffer=16 * 1024, max_inbound=64 * 1024)
    with caplog.at_level(logging.ERROR, logger="railcar.engine"), connect(server.port) as sock:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            sock.sendall(b"z" * 1024 * 1024)
        assert wait_until(lambda: len(hoarder.closed) == 1)
    assert any(r.exc_info and isinstance(r.exc_info[1], InboundOverflow) for r in caplog.records)
    assert server.active_connections == 0


def test_connect_and_reset_storm_leaves_server_serving(serve: ServerFactory) -> None:
    recorder = Recorder()
    server = serve(recorder)
    for index in range(200):
        sock = socket.socket()
        sock.connect(("127.0.0.1", server.port))
        if index % 2:
            sock.sendall(b"partial")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    assert wait_until(lambda: server.active_connections == 0 and len(recorder.closed) == 200, 10)
    with connect(server.port) as sock:
        sock.sendall(b"alive")
        assert recv_exactly(sock, 5) == b"alive"


class FailsAround(EchoHandler):
    """Echoes, but on_start, on_eof and on_close raise: the server must serve on regardless."""

    def __init__(self) -> None:
        self.closed = 0

    def on_start(self, server: Server) -> None:
        raise RuntimeError("on_start bug")

    def on_eof(self, conn: Conn) -> bool:
        raise RuntimeError("on_eof bug")

    def on_close(self, conn: Conn, exc: BaseException | None) -> None:
        self.closed += 1
        raise RuntimeError("on_close bug")


def test_failing_start_eof_and_close_callbacks_are_logged_and_serving_goes_on(
    serve: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    handler = FailsAround()
    with caplog.at_level(logging.ERROR, logger="railcar.engine"):
        server = serve(handler)
        for _ in range(2):
            with connect(server.port) as sock:
                sock.sendall(b"still here")
                assert recv_exactly(sock, 10) == b"still here"
                sock.shutdown(socket.SHUT_WR)
                with contextlib.suppress(ConnectionResetError):  # on_eof failed: the connection is aborted
                    assert sock.recv(10) == b""
        assert wait_until(lambda: server.active_connections == 0)

        def failures(text: str) -> int:
            return sum(1 for r in caplog.records if r.exc_info and str(r.exc_info[1]) == text)

        # on_close counts before it raises: wait for the log lines, not for the count.
        assert wait_until(lambda: failures("on_close bug") == 2)
    assert handler.closed == 2
    assert failures("on_start bug") == 1
    assert failures("on_eof bug") == 2


class StopRecorder(Recorder):
    """Records, at each on_stop, how many connections had closed; on loop engines, cleans up async."""

    def __init__(self) -> None:
        super().__init__()
        self.stops: list[int] = []
        self.cleaned_up = 0

    def on_stop(self, server: Server) -> Awaitable[None] | None:
        self.stops.append(len(self.closed))
        if not server.has_loop:
            return None

        async def cleanup() -> None:
            await asyncio.sleep(0.05)  # a real await: the loop must still run it
            self.cleaned_up += 1

        return cleanup()


def test_on_stop_follows_every_on_close_once_per_run(engine: str) -> None:
    recorder = StopRecorder()
    server = create_server(recorder, engine)
    for run in (1, 2):
        server.start()
        with connect(server.port) as client:
            client.sendall(b"ping")
            assert recv_exactly(client, 4) == b"ping"
            server.stop(deadline=2.0)
        assert recorder.stops == [1, 2][:run]  # the open connection's on_close came first
        assert recorder.cleaned_up == (run if type(server).has_loop else 0)  # awaited before stop returned


class SlowCleanup(Handler):
    def on_stop(self, server: Server) -> Awaitable[None] | None:
        return asyncio.sleep(30) if server.has_loop else None


def test_on_stop_clean_up_is_bounded_by_the_stop_deadline(engine: str) -> None:
    server = create_server(SlowCleanup(), engine)
    server.start()
    started = time.monotonic()
    server.stop(deadline=0.3)
    assert time.monotonic() - started < 3
