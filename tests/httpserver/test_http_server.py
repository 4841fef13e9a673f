"""The HTTP server over sockets, same bodies on every engine: routes, pipelining, bad input, timeouts."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from railcar.apps.hello_http import hello_app
from railcar.http import date as date_module
from railcar.http.app import Request, Response, StreamingResponse
from railcar.http.server import HttpHandler
from railcar.http.timeouts import Timeouts
from railcar.proto.http1 import PARSERS, Limits
from tests.conftest import ServerFactory
from tests.helpers import connect, recv_until_eof
from tests.property.test_http1_parser import SMUGGLING


class CountingApp:
    """hello_app that counts its calls (thread-safe for the threads engine)."""

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        with self.lock:
            self.calls += 1
        return hello_app(request)


def exchange(port: int, data: bytes) -> bytes:
    with connect(port) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        return recv_until_eof(sock)


@pytest.mark.parametrize("parser", PARSERS)
def test_routes(serve: ServerFactory, parser: str) -> None:
    port = serve(HttpHandler(hello_app, parser=parser)).port
    reply = exchange(port, b"GET /plaintext HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nContent-Type: text/plain\r\n" in head
    assert b"\r\nDate: " in head
    assert body == b"Hello, World!"
    reply = exchange(port, b"GET /json HTTP/1.0\r\n\r\n")
    assert reply.endswith(b'\r\n\r\n{"message":"Hello, World!"}')
    assert exchange(port, b"GET /nope HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 404 ")


def test_pipelined_requests_are_answered_in_order(serve: ServerFactory) -> None:
    port = serve(HttpHandler(hello_app)).port
    requests = b"GET /json HTTP/1.1\r\nHost: a\r\n\r\n" + b"GET /plaintext HTTP/1.1\r\nHost: a\r\n\r\n" * 3
    reply = exchange(port, requests + b"GET /json HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    bodies = [part.split(b"HTTP/1.1")[0] for part in reply.split(b"\r\n\r\n")[1:]]
    assert bodies == [b'{"message":"Hello, World!"}', *[b"Hello, World!"] * 3, b'{"message":"Hello, World!"}']


class RecordingConn:
    """Enough of a Conn to count the writes a handler makes for one read."""

    def __init__(self) -> None:
        self.context: dict[str, object] = {}
        self.writes: list[bytes] = []
        self.closed = False
        self.reading = True
        self.peer = self.local = ("127.0.0.1", 1)

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True


def test_the_responses_to_one_read_go_out_in_one_write() -> None:
    handler = HttpHandler(hello_app)
    conn = RecordingConn()
    handler.on_open(conn)  # type: ignore[arg-type]
    handler.on_data(conn, memoryview(b"GET /plaintext HTTP/1.1\r\nHost: a\r\n\r\n" * 16))  # type: ignore[arg-type]
    assert len(conn.writes) == 1
    assert conn.writes[0].count(b"Hello, World!") == 16


@pytest.mark.parametrize("name", SMUGGLING)
def test_smuggling_gets_400_and_close_and_never_reaches_the_app(serve: ServerFactory, name: str) -> None:
    app = CountingApp()
    port = serve(HttpHandler(app)).port
    reply = exchange(port, SMUGGLING[name])
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"\r\nConnection: close\r\n" in reply
    assert reply.count(b"\r\n\r\n") == 1  # one response, nothing after it
    assert app.calls == 0


@pytest.mark.parametrize("parser", PARSERS)
def test_limits_give_431_414_413(serve: ServerFactory, parser: str) -> None:
    app = CountingApp()
    limits = Limits(max_head=2048, max_headers=10, max_target=256, max_body=100)
    port = serve(HttpHandler(app, limits, parser=parser)).port
    big_head = b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 4000 + b"\r\n\r\n"
    assert exchange(port, big_head).startswith(b"HTTP/1.1 431 ")
    many = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X%d: v\r\n" % i for i in range(11)) + b"\r\n"
    assert exchange(port, many).startswith(b"HTTP/1.1 431 ")
    assert exchange(port, b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: a\r\n\r\n").startswith(
        b"HTTP/1.1 414 "
    )
    body = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n" + b"b" * 101
    assert exchange(port, body).startswith(b"HTTP/1.1 413 ")
    assert app.calls == 0


def echo_body(request: Request) -> Response:
    return Response(b"got %d bytes" % len(request.body))


def test_expect_100_continue_is_answered_before_the_body(serve: ServerFactory) -> None:
    port = serve(HttpHandler(echo_body)).port
    with connect(port) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            interim += sock.recv(100)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        sock.shutdown(socket.SHUT_WR)
        reply = recv_until_eof(sock)
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
        assert reply.endswith(b"got 5 bytes")
    # A body sent along with the head needs no interim response; HTTP/1.0 never gets one.
    whole = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi"
    assert exchange(port, whole).startswith(b"HTTP/1.1 200 OK\r\n")
    old = b"POST / HTTP/1.0\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi"
    assert exchange(port, old).startswith(b"HTTP/1.1 200 OK\r\n")


def test_an_unknown_expectation_gets_417_and_never_reaches_the_app(serve: ServerFactory) -> None:
    app = CountingApp()
    port = serve(HttpHandler(app)).port
    reply = exchange(port, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: 200-ok\r\n\r\nhi")
    assert reply.startswith(b"HTTP/1.1 417 ")
    assert app.calls == 0


def test_curl_uploads_without_waiting_for_its_expect_timeout(serve: ServerFactory, tmp_path: Path) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.fail("curl is missing: apt-get install -y curl (scripts/install-tools)")
    port = serve(HttpHandler(echo_body)).port
    upload = tmp_path / "upload.bin"
    upload.write_bytes(b"u" * 100_000)
    started = time.monotonic()
    done = subprocess.run(
        [
            *(curl, "-sS", "--expect100-timeout", "5", "-H", "Expect: 100-continue"),
            *("--data-binary", f"@{upload}", f"http://127.0.0.1:{port}/"),
        ],
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert done.stdout == b"got 100000 bytes"
    assert time.monotonic() - started < 4  # curl would have waited 5 s for a 100 Continue


def test_slow_and_idle_clients_are_timed_out(serve: ServerFactory) -> None:
    timeouts = Timeouts(header=0.3, idle=0.3, body=0.3)
    port = serve(HttpHandler(hello_app, timeouts=timeouts)).port
    with connect(port) as sock:  # slowloris: a head that never ends
        sock.sendall(b"GET /plaintext HTTP/1.1\r\nHost: a\r\n")
        started = time.monotonic()
        assert recv_until_eof(sock).startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - started < 5
    with connect(port) as sock:  # a body that never comes
        sock.sendall(b"POST /plaintext HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab")
        assert recv_until_eof(sock).startswith(b"HTTP/1.1 408 ")
    with connect(port) as sock:  # idle keep-alive: answered, then closed without a word
        sock.sendall(b"GET /plaintext HTTP/1.1\r\nHost: a\r\n\r\n")
        reply = recv_until_eof(sock)
        assert reply.startswith(b"HTTP/1.1 200 OK")
        assert reply.count(b"HTTP/1.1") == 1
    with connect(port) as sock:  # a connection that never sends anything
        assert recv_until_eof(sock) == b""


def test_a_connection_that_keeps_sending_requests_is_never_idle(serve: ServerFactory) -> None:
    # One request every 0.2 s for 1.5 s: past the header timeout (from the open) and five times
    # the idle timeout, which runs from the last response.
    timeouts = Timeouts(header=0.6, idle=0.4, body=0.6)
    port = serve(HttpHandler(hello_app, timeouts=timeouts)).port
    with connect(port) as sock:
        sock.settimeout(5)
        for _ in range(8):
            sock.sendall(b"GET /plaintext HTTP/1.1\r\nHost: a\r\n\r\n")
            reply = b""
            while not reply.endswith(b"Hello, World!"):
                chunk = sock.recv(4096)
                assert chunk, "closed while requests kept coming"
                reply += chunk
            time.sleep(0.2)
        started = time.monotonic()
        assert recv_until_eof(sock) == b""  # then idle: closed without a word
        assert time.monotonic() - started < 3


def stream_or_target(request: Request) -> Response | StreamingResponse:
    if request.target == b"/stream":
        return StreamingResponse(iter([b"a", b"b"]))
    return Response(request.target)


@pytest.mark.parametrize(
    ("last", "ending"),
    [
        (b"GET /2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"/2"),
        (b"BOGUS\r\n\r\n", b"HTTP/1.1 400 "),
    ],
    ids=["closing", "malformed"],
)
def test_requests_pipelined_behind_a_stream_are_answered_when_the_last_one_ends_the_connection(
    serve: ServerFactory, last: bytes, ending: bytes
) -> None:
    port = serve(HttpHandler(stream_or_target)).port
    first = b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\nGET /1 HTTP/1.1\r\nHost: x\r\n\r\n"
    reply = exchange(port, first + last)
    stream, _, rest = reply.partition(b"1\r\na\r\n1\r\nb\r\n0\r\n\r\n")
    assert stream.startswith(b"HTTP/1.1 200 OK\r\n")
    assert rest.count(b"HTTP/1.1 ") == 2
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\n\r\n/1HTTP/1.1 " in rest
    assert ending in rest.rpartition(b"\r\n\r\n/1")[2]


def test_h2load_smoke(serve: ServerFactory) -> None:
    if shutil.which("h2load") is None:
        pytest.fail("h2load is missing: apt-get install -y nghttp2-client (scripts/install-tools)")
    port = serve(HttpHandler(hello_app)).port
    result = subprocess.run(
        ["h2load", "--h1", "-n", "2000", "-c", "4", "-m", "8", f"http://127.0.0.1:{port}/plaintext"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "2000 succeeded, 0 failed, 0 errored" in result.stdout
    assert "status codes: 2000 2xx" in result.stdout


def test_a_reused_response_carries_the_current_date(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(date_module, "time", SimpleNamespace(time=lambda: clock[0]))
    handler = HttpHandler(hello_app)
    conn = RecordingConn()
    handler.on_open(conn)  # type: ignore[arg-type]
    request = b"GET /plaintext HTTP/1.1\r\nHost: a\r\n\r\n"
    for now in (1_700_000_000.0, 1_700_000_000.5, 1_700_000_001.5):  # a second twice, then the next
        clock[0] = now
        handler.on_data(conn, memoryview(request * 2))  # type: ignore[arg-type]
    dates = [line for write in conn.writes for line in write.split(b"\r\n") if line.startswith(b"Date: ")]
    first, second = b"Date: Tue, 14 Nov 2023 22:13:20 GMT", b"Date: Tue, 14 Nov 2023 22:13:21 GMT"
    assert dates == [first] * 4 + [second] * 2
    assert all(write.count(b"Hello, World!") == 2 for write in conn.writes)


def test_an_absolute_form_target_is_routed_by_its_path(serve: ServerFactory) -> None:
    port = serve(HttpHandler(hello_app)).port
    reply = exchange(
        port, b"GET http://a.test/plaintext HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
    )
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert reply.endswith(b"\r\n\r\nHello, World!")
