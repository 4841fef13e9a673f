"""A Starlette app served through the ASGI adapter, on the engines with an event loop."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from railcar import ENGINES, create_server
from railcar.engine import server_class
from railcar.http.asgi import ASGIAdapter
from railcar.http.server import HttpHandler


async def hello(request: StarletteRequest) -> PlainTextResponse:
    return PlainTextResponse(f"hello {request.query_params.get('name', 'world')}")


async def echo(request: StarletteRequest) -> JSONResponse:
    body = await request.body()
    return JSONResponse(
        {"method": request.method, "size": len(body), "type": request.headers["content-type"]}
    )


starlette_app = Starlette(routes=[Route("/hello", hello), Route("/echo", echo, methods=["POST"])])


@pytest.mark.parametrize("engine", [e for e in ENGINES if server_class(e).has_loop])
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
