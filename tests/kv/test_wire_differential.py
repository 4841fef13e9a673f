"""Mangled RESP streams get the same bytes back, and the same close, from railcar as from redis-server."""

from __future__ import annotations

import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from railcar.apps.kv import KvHandler
from railcar.engine.api import Server
from railcar.proto.resp import PARSERS, encode_command
from tests.conftest import ServerFactory
from tests.helpers import connect

words = st.sampled_from([b"k", b"v", b"1", b"", b"a b", b"-1", b"\r\n", b"$", b"*"])
commands = st.one_of(
    st.tuples(
        st.sampled_from([b"SET", b"GET", b"ECHO", b"PING", b"INCR", b"DEL"]), st.lists(words, max_size=2)
    ).map(lambda c: encode_command(c[0], *c[1])),
    st.sampled_from([b"PING\r\n", b"GET k\r\n", b"ECHO 'x y'\r\n", b'SET k "a\\x41"\r\n', b"\r\n"]),
)
edit = st.tuples(
    st.integers(0, 10_000),
    st.sampled_from(["insert", "delete", "replace"]),
    st.binary(min_size=1, max_size=3),
)


def mangle(stream: bytes, edits: list[tuple[int, str, bytes]]) -> bytes:
    data = bytearray(stream)
    for position, kind, blob in edits:
        at = position % (len(data) + 1)
        if kind == "insert":
            data[at:at] = blob
        elif kind == "delete":
            del data[at : at + len(blob)]
        else:
            data[at : at + len(blob)] = blob
    return bytes(data)


def exchange(port: int, wire: bytes) -> bytes:
    received = bytearray()
    with connect(port, timeout=5) as sock:
        try:
            sock.sendall(wire)
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                received += chunk
        except OSError:  # a reset after a protocol error: keep what came before it
            pass
    return bytes(received)


# Every parser with the default executor (C where built), and the C parser with the Python one.
SETUPS = [(parser, "auto") for parser in PARSERS] + [("c", "python")]


@pytest.fixture(params=SETUPS, ids=[f"{parser}-{executor}" for parser, executor in SETUPS])
def kv_server(serve: ServerFactory, request: pytest.FixtureRequest) -> Server:
    parser, executor = request.param
    return serve(KvHandler(parser=parser, executor=executor))


@settings(
    max_examples=60,  # per setup: four, the same examples in all
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(stream=st.lists(commands, min_size=1, max_size=8), edits=st.lists(edit, max_size=3))
def test_mangled_streams_match_redis(
    kv_server: Server, redis_port: int, stream: list[bytes], edits: list[tuple[int, str, bytes]]
) -> None:
    wire = mangle(b"".join(stream), edits)
    for port in (redis_port, kv_server.port):
        exchange(port, encode_command("FLUSHALL"))
    expected = exchange(redis_port, wire)
    assert exchange(kv_server.port, wire) == expected, wire
