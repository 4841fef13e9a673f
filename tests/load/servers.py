"""Misbehaving and slow servers for the load generator's tests (thread per connection, loopback)."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator

Behaviour = Callable[[socket.socket], None]


def delayed_echo(delay: float) -> Behaviour:
    """Echo each read after sleeping ``delay`` seconds."""

    def serve(conn: socket.socket) -> None:
        while data := conn.recv(65536):
            time.sleep(delay)
            conn.sendall(data)

    return serve


def closing_echo(replies: int) -> Behaviour:
    """Echo ``replies`` reads, then swallow the next request and close."""

    def serve(conn: socket.socket) -> None:
        for _ in range(replies):
            data = conn.recv(65536)
            if not data:
                return
            conn.sendall(data)
        conn.recv(65536)

    return serve


def lying_echo(conn: socket.socket) -> None:
    """Echo with the last byte of every read changed."""
    while data := conn.recv(65536):
        conn.sendall(data[:-1] + bytes([data[-1] ^ 0xFF]))


def stalling_echo(stall_at: float, stall: float) -> Behaviour:
    """Echo, but stop answering for ``stall`` seconds, ``stall_at`` seconds after the first request."""
    lock = threading.Lock()
    state = {"started": 0.0, "stalled": False}

    def serve(conn: socket.socket) -> None:
        while data := conn.recv(65536):
            with lock:
                now = time.monotonic()
                state["started"] = state["started"] or now
                if not state["stalled"] and now - state["started"] >= stall_at:
                    state["stalled"] = True
                    time.sleep(stall)
            conn.sendall(data)

    return serve


def never_reads(conn: socket.socket) -> None:
    """Accept and never read (for 5 s): what the client sends piles up on its side."""
    threading.Event().wait(5)


def silent_after(replies: int) -> Behaviour:
    """Echo the first ``replies`` reads, then read on and never answer again."""

    def serve(conn: socket.socket) -> None:
        answered = 0
        while data := conn.recv(65536):
            if answered < replies:
                conn.sendall(data)
                answered += 1

    return serve


@contextlib.contextmanager
def serving(behaviour: Behaviour) -> Iterator[int]:
    """Run a thread-per-connection server with ``behaviour`` on 127.0.0.1; yield its port."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with contextlib.suppress(OSError):
                behaviour(self.request)

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 128

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
