"""Starlette apps served through the ASGI adapter, on the engines with an event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from railcar import create_server
from railcar.engine import available_engines, server_class
from railcar.engine.api import Server
from railcar.http.asgi import ASGIAdapter, create_asgi_server, wait_for_startup
from railcar.http.lifespan import LifespanFailed
from railcar.http.server import HttpHandler
from railcar.proto.http1 import Request as WireRequest
from tests.helpers import wait_until
from tests.httpserver.asgi_apps import (
    events,
    failing_startup_app,
    flood_app,
    lifespan_app,
    no_lifespan_app,
    streaming_then_raising_app,
)

LOOP_ENGINES = [e for e in available_engines() if server_class(e).has_loop]


async def hello(request: StarletteRequest) -> PlainTextResponse:
    return PlainTextResponse(f"hello {request.query_params.get('name', 'world')}")


async def echo(request: StarletteRequest) -> JSONResponse:
    body = await request.body()
    return JSONResponse(
        {"method": request.method, "size": len(body), "type": request.headers["content-type"]}
    )


starlette_app = Starlette(routes=[Route("/hello", hello), Route("/echo", echo, methods=["POST"])])


@pytest.mark.parametrize("engine", LOOP_ENGINES)
def test_starlette_app_answers_through_the_adapter(engine: str) -> None:
    server = create_server(HttpHandler(ASGIAdapter(starlette_app)), engine)
    with server, httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as client:
        reply = client.get("/hello", params={"name": "rail car"})
        assert (reply.status_code, reply.text) == (200, "hello rail car")
        assert reply.headers["content-type"].startswith("text/plain")
        reply = client.post(
            "/echo", content=b"x" * 5000, headers={"content-type": "application/octet-stream"}
        )
        assert reply.json() == {"method": "POST", "size": 5000, "type": "application/octet-stream"}
        assert client.get("/missing").status_code == 404
        assert client.get("/echo").status_code == 405


@contextlib.contextmanager
def asgi_server(app: Any, engine: str, **options: Any) -> Iterator[Server]:
    server = create_asgi_server(app, engine, **options)
    server.start()
    try:
        wait_for_startup(server, 10)
        yield server
    finally:
        server.stop(deadline=2.0)


@pytest.mark.parametrize("engine", LOOP_ENGINES)
def test_lifespan_runs_around_the_server_and_streams_are_chunked(engine: str) -> None:
    events.log.clear()
    with (
        asgi_server(lifespan_app, engine) as server,
        httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as client,
    ):
        assert events.log == ["startup"]
        assert client.get("/greet").text == "hello from startup"
        reply = client.get("/count", params={"to": "1000"})
        assert reply.headers["transfer-encoding"] == "chunked"
        assert reply.text == "".join(f"{n}\n" for n in range(1000))
        head = client.head("/count", params={"to": "5"})
        assert (head.status_code, head.content) == (200, b"")
        assert client.get("/greet").status_code == 200  # the connection goes on after the HEAD
    assert events.log == ["startup", "shutdown"]


@pytest.mark.parametrize("engine", LOOP_ENGINES)
def test_a_client_that_does_not_read_holds_the_stream_back_and_leaving_ends_it(engine: str) -> None:
    events.pieces_sent, events.stream_ended = 0, None
    with asgi_server(flood_app, engine, lifespan="off") as server:
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(b"GET /flood HTTP/1.1\r\nHost: x\r\n\r\n")
        assert wait_until(lambda: events.pieces_sent > 0)
        time.sleep(0.5)  # give a server that ignored backpressure time to run ahead
        held = events.pieces_sent
        assert held < 64  # socket buffers and the high-water mark hold a few MB, not 10 GB
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # reset: the client is gone
        assert wait_until(lambda: events.stream_ended is not None)
        assert events.stream_ended == "ClientDisconnected"


@pytest.mark.parametrize("engine", LOOP_ENGINES)
def test_an_app_without_lifespan_is_served_in_auto_mode_and_refused_in_on_mode(engine: str) -> None:
    with asgi_server(no_lifespan_app, engine) as server:
        assert httpx.get(f"http://127.0.0.1:{server.port}/", timeout=10).text == "plain"
    server = create_asgi_server(no_lifespan_app, engine, lifespan="on")
    server.start()
    try:
        with pytest.raises(LifespanFailed, match="unsupported scope lifespan"):
            wait_for_startup(server, 10)
    finally:
        server.stop(deadline=1.0)


@pytest.mark.parametrize("engine", LOOP_ENGINES)
def test_a_failed_startup_is_reported_with_the_apps_message(engine: str) -> None:
    server = create_asgi_server(failing_startup_app, engine)
    server.start()
    try:
        with pytest.raises(LifespanFailed, match="lifespan startup failed: no database"):
            wait_for_startup(server, 10)
        # a request that came anyway is answered 500, not left waiting
        assert httpx.get(f"http://127.0.0.1:{server.port}/", timeout=10).status_code == 500
    finally:
        server.stop(deadline=1.0)


def test_an_asgi_app_needs_an_engine_with_a_loop() -> None:
    with pytest.raises(ValueError, match="needs an engine with an event loop"):
        create_asgi_server(no_lifespan_app, "epoll")


@pytest.mark.parametrize("engine", LOOP_ENGINES)
def test_an_app_failing_mid_stream_aborts_only_its_connection(engine: str) -> None:
    with asgi_server(streaming_then_raising_app, engine) as server:
        for _ in range(2):  # the server goes on serving
            with pytest.raises(httpx.RemoteProtocolError):
                httpx.get(f"http://127.0.0.1:{server.port}/", timeout=10)


def serve_asgi(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "railcar", "serve", "asgi", *args, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_serve_asgi_runs_the_lifespan_and_stops_on_sigterm() -> None:
    with serve_asgi("tests.httpserver.asgi_apps:lifespan_app") as proc:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().rsplit(":", 1)[1])
        assert httpx.get(f"http://127.0.0.1:{port}/greet", timeout=10).text == "hello from startup"
        proc.terminate()
        assert proc.wait(timeout=10) == 0


@pytest.mark.parametrize(
    ("app", "needle"),
    [
        ("tests.httpserver.asgi_apps:failing_startup_app", "lifespan startup failed: no database"),
        ("tests.httpserver.no_such_module:app", "cannot import 'tests.httpserver.no_such_module'"),
        ("tests.httpserver.asgi_apps:missing", "has no 'missing'"),
        ("no_colon", "is not MODULE:ATTRIBUTE"),
        ("tests.httpserver.asgi_apps:events", "is not callable (Events): not an ASGI app"),
    ],
)
def test_serve_asgi_refuses_with_one_line(app: str, needle: str) -> None:
    with serve_asgi(app) as proc:
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert out == ""
    [line] = err.strip().splitlines()
    assert line.startswith("railcar: error: ")
    assert needle in line


async def long_poll_app(scope: Any, receive: Any, send: Any) -> None:
    """Reads its request, then waits for the next message: a client that leaves must end the wait."""
    if scope["type"] != "http":
        return
    await receive()
    events.heard = (await receive())["type"]


@pytest.mark.parametrize("engine", LOOP_ENGINES)
def test_an_app_waiting_on_receive_hears_the_client_leave(engine: str) -> None:
    events.heard = None
    with asgi_server(long_poll_app, engine, lifespan="off") as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.2)  # the app is waiting on its second receive
            assert events.heard is None
        assert wait_until(lambda: events.heard is not None)
        assert events.heard == "http.disconnect"


@pytest.mark.parametrize("engine", LOOP_ENGINES)
def test_an_async_app_whose_client_left_is_cancelled(engine: str) -> None:
    started: list[str] = []
    cancelled: list[str] = []

    async def slow(request: Any) -> Any:
        started.append(request.method)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(request.method)
            raise

    with create_server(HttpHandler(slow), engine) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert wait_until(lambda: started == ["GET"])
        assert wait_until(lambda: cancelled == ["GET"])


def test_an_absolute_form_targets_host_replaces_the_host_header_in_the_scope() -> None:
    request = WireRequest("GET", b"http://real.test:81/a%2Fb?x=1", "1.1", [(b"Host", b"other.test")])
    scope = ASGIAdapter(no_lifespan_app).scope(request)
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == ("/a/b", b"/a%2Fb", b"x=1")
    assert scope["headers"] == [(b"host", b"real.test:81")]
