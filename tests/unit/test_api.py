"""The engine-independent parts of the contract: options, the inbound buffer, the registry."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from railcar import Conn, EngineUnavailable, Handler, InboundOverflow, ServerOptions, create_server
from railcar.engine import server_class


class Frames(Handler):
    """Pull mode: newline-terminated lines."""

    buffered = True

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def on_data(self, conn: Conn, data: memoryview) -> None:
        while (end := conn.peek().find(b"\n")) >= 0:
            self.lines.append(conn.next(end))
            assert conn.discard(1) == 1


@given(st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=20), st.data())
def test_inbound_buffer_is_split_invariant(lines: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(line + b"\n" for line in lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    handler = Frames()
    conn = Conn(("peer", 1), ("local", 2))
    options = ServerOptions()
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        conn._feed_inbound(memoryview(stream[start:end]), handler, options.max_inbound)
    assert handler.lines == lines
    assert conn.inbound_buffered == 0


def test_peek_next_discard_semantics() -> None:
    conn = Conn((), ())
    seen: list[bytes] = []

    class Pull(Handler):
        buffered = True

        def on_data(self, conn: Conn, data: memoryview) -> None:
            assert bytes(data) == b"abcdef"
            assert conn.peek(2) == b"ab"
            assert conn.inbound_buffered == 6
            assert conn.next(2) == b"ab"
            assert conn.discard(1) == 1
            assert conn.next(100) == b"def"
            assert conn.discard(5) == 0
            seen.append(conn.peek())

    conn._feed_inbound(memoryview(b"abcdef"), Pull(), 1024)
    assert seen == [b""]
    assert conn.peek() == b""


def test_unconsumed_bytes_over_the_limit_raise() -> None:
    conn = Conn((), ())

    class Ignore(Handler):
        buffered = True

    conn._feed_inbound(memoryview(b"x" * 10), Ignore(), 16)
    assert conn.inbound_buffered == 10
    with pytest.raises(InboundOverflow, match="exceed the inbound limit of 16"):
        conn._feed_inbound(memoryview(b"y" * 10), Ignore(), 16)


def test_context_is_per_connection() -> None:
    first, second = Conn((), ()), Conn((), ())
    first.context["user"] = "ada"
    assert second.context == {}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"port": 70000}, "port must be in 0..65535"),
        ({"read_buffer": 10}, "read_buffer"),
        ({"high_water": 10, "low_water": 20}, "low_water"),
        ({"max_inbound": 2048, "read_buffer": 4096}, "max_inbound"),
    ],
)
def test_inconsistent_options_are_refused(options: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServerOptions(**options)


def test_unknown_engine_names_the_choices() -> None:
    with pytest.raises(EngineUnavailable, match="choose one of uvloop, asyncio, epoll, threads"):
        server_class("warp")
    with pytest.raises(EngineUnavailable):
        create_server(Handler(), "warp")


def test_unstarted_server_has_no_address() -> None:
    server = create_server(Handler(), "epoll")
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.port


def test_reuse_port_is_only_for_tcp_sockets_the_server_binds() -> None:
    with pytest.raises(ValueError, match="reuse_port"):
        ServerOptions(unix="/tmp/railcar-test.sock", reuse_port=True)
    with socket.create_server(("127.0.0.1", 0)) as listener, pytest.raises(ValueError, match="reuse_port"):
        ServerOptions(sock=listener, reuse_port=True)


def test_sock_must_be_a_listening_stream_socket_given_alone() -> None:
    with socket.socket() as unbound, pytest.raises(ValueError, match="listening"):
        ServerOptions(sock=unbound)
    with socket.socket(type=socket.SOCK_DGRAM) as datagram, pytest.raises(ValueError, match="stream"):
        ServerOptions(sock=datagram)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with pytest.raises(ValueError, match="not both"):
            ServerOptions(sock=listener, port=8080)
        assert ServerOptions(sock=listener).sock is listener
