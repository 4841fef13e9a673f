"""Every measured server first serves one connection that sends a request, reads the reply and closes.

Why: glibc's malloc serves a block over its mmap threshold (128 KiB at first) with its own
mmap and, once such a block is freed, raises the threshold to that block's size. Until then
every ``sock.recv(262144)`` of the stdlib asyncio loop maps its 256 KiB buffer and unmaps it
again (the buffer is shrunk to the bytes read before it is freed, so the reads themselves
never raise the threshold): two system calls per read. The first connection that ends frees
such a block and raises the threshold, so whichever system a bench measured first paid for
reads that the ones measured after it did not. One connection opened, used and closed
before the load (which then warms up as it runs) brings every server to the same state.
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Callable

from railcar.errors import RailcarError
from railcar.load.workloads import RESP_PING, RESP_PONG
from railcar.proto.kvbin import GET, NOT_FOUND_REPLY, encode_request

# Opens a connection to (host, port), sends one request, reads its whole reply, closes;
# raises OSError or RailcarError when the server does not answer as it should.
Prime = Callable[[str, int], None]

TIMEOUT = 10.0


def prime_server(name: str, host: str, port: int, prime: Prime) -> None:
    """Run ``prime`` against the server ``name``; raises RailcarError naming it if the server fails it."""
    try:
        prime(host, port)
    except (OSError, RailcarError) as exc:
        raise RailcarError(f"{name} did not answer a first request: {exc}") from None


def exchange(request: bytes, reply: bytes) -> Prime:
    """A prime for a protocol whose reply to ``request`` is known byte for byte."""

    def prime(host: str, port: int) -> None:
        with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
            sock.sendall(request)
            received = bytearray()
            while len(received) < len(reply):
                chunk = sock.recv(len(reply) - len(received))
                if not chunk:
                    break
                received += chunk
        if received != reply:
            raise RailcarError(f"replied {bytes(received)[:40]!r}, not {reply[:40]!r}")

    return prime


def http_get(host: str, port: int, path: str = "/") -> None:
    """A prime for HTTP/1.1 servers: ``GET path`` and its whole response."""
    connection = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
    except http.client.HTTPException as exc:
        raise RailcarError(f"bad HTTP response: {exc!r}") from None
    finally:
        connection.close()
    if response.status >= 400:
        raise RailcarError(f"HTTP status {response.status}")


ECHO = exchange(b"railcar prime", b"railcar prime")
RESP = exchange(RESP_PING, RESP_PONG)
KVBIN = exchange(encode_request(GET, b"railcar:prime"), NOT_FOUND_REPLY)
