"""The kvbin protocol on every engine: GET/SET, pipelining, the shared store, malformed input, the AOF."""

from __future__ import annotations

import socket
import subprocess
import threading
from pathlib import Path

import pytest

from railcar.apps.kvbin import OOM_TEXT, WRONGTYPE_TEXT, KvbinHandler
from railcar.bench.external import tool
from railcar.engine.api import Server
from railcar.kv.server import KvServer
from railcar.proto.kvbin import (
    ERROR,
    GET,
    NOT_FOUND,
    OK,
    OOM,
    SET,
    TOO_LARGE,
    WRONG_TYPE,
    Reply,
    ReplyParser,
    encode_request,
)
from tests.conftest import ServerFactory
from tests.helpers import connect, recv_until_eof, wait_until


def exchange(sock: socket.socket, wire: bytes, count: int) -> list[Reply]:
    """Send ``wire`` and read ``count`` replies."""
    sock.sendall(wire)
    parser = ReplyParser()
    replies: list[Reply] = []
    while len(replies) < count:
        chunk = sock.recv(1 << 20)
        assert chunk, "connection closed early"
        replies += parser.feed(chunk)
    assert len(replies) == count
    return replies


@pytest.fixture
def kvbin(serve: ServerFactory) -> Server:
    return serve(KvbinHandler())


def test_set_then_get_and_not_found(kvbin: Server) -> None:
    with connect(kvbin.port) as sock:
        assert exchange(sock, encode_request(GET, b"k"), 1) == [Reply(NOT_FOUND, b"")]
        assert exchange(sock, encode_request(SET, b"k", b"v1"), 1) == [Reply(OK, b"")]
        assert exchange(sock, encode_request(GET, b"k"), 1) == [Reply(OK, b"v1")]
        assert exchange(sock, encode_request(SET, b"", b""), 1) == [Reply(OK, b"")]
        assert exchange(sock, encode_request(GET, b""), 1) == [Reply(OK, b"")]


def test_pipelined_requests_are_answered_in_order(kvbin: Server) -> None:
    wire = b"".join(
        encode_request(SET, b"key%d" % i, b"value%d" % i) + encode_request(GET, b"key%d" % i)
        for i in range(2000)
    )
    with connect(kvbin.port) as sock:
        replies = exchange(sock, wire, 4000)
    assert replies[0::2] == [Reply(OK, b"")] * 2000
    assert replies[1::2] == [Reply(OK, b"value%d" % i) for i in range(2000)]


def test_a_pipeline_of_large_values_is_all_delivered(kvbin: Server) -> None:
    value = b"v" * 65_535
    with connect(kvbin.port) as sock:
        assert exchange(sock, encode_request(SET, b"big", value), 1) == [Reply(OK, b"")]
        # 26 MB of replies, far over the engines' output high-water mark
        assert exchange(sock, encode_request(GET, b"big") * 400, 400) == [Reply(OK, value)] * 400


def test_strings_written_over_resp_are_read_and_other_types_refused(serve: ServerFactory) -> None:
    kv = KvServer()
    resp = kv.new_client()
    resp.execute([b"SET", b"s", b"from resp"])
    resp.execute([b"RPUSH", b"list", b"x"])
    resp.execute([b"SET", b"huge", b"h" * 70_000])
    server = serve(KvbinHandler(kv))
    with connect(server.port) as sock:
        wire = encode_request(GET, b"s") + encode_request(GET, b"list") + encode_request(GET, b"huge")
        assert exchange(sock, wire, 3) == [
            Reply(OK, b"from resp"),
            Reply(WRONG_TYPE, WRONGTYPE_TEXT),
            Reply(TOO_LARGE, b"value of 70000 bytes"),
        ]
        assert exchange(sock, encode_request(SET, b"n", b"7"), 1) == [Reply(OK, b"")]
    assert resp.execute([b"INCR", b"n"]) == 8


def test_past_maxmemory_sets_are_refused_and_reads_go_on(serve: ServerFactory) -> None:
    server = serve(KvbinHandler(maxmemory=1000))
    with connect(server.port) as sock:
        assert exchange(sock, encode_request(SET, b"big", b"x" * 2000), 1) == [Reply(OK, b"")]  # was under
        wire = encode_request(SET, b"more", b"y") + encode_request(GET, b"big") + encode_request(GET, b"more")
        assert exchange(sock, wire, 3) == [
            Reply(OOM, OOM_TEXT),
            Reply(OK, b"x" * 2000),
            Reply(NOT_FOUND, b""),
        ]


@pytest.mark.parametrize(
    ("garbage", "error"),
    [
        (b"\x09\x00\x01\x00\x00k", b"unknown opcode 9"),
        (b"\x01\x00\x01\x00\x01kv", b"GET with a 1-byte value"),
    ],
)
def test_malformed_request_gets_error_reply_then_close(kvbin: Server, garbage: bytes, error: bytes) -> None:
    wire = encode_request(SET, b"a", b"1") + garbage + encode_request(GET, b"a")
    with connect(kvbin.port) as bystander, connect(kvbin.port) as sock:
        sock.sendall(wire)
        parser = ReplyParser()
        assert parser.feed(recv_until_eof(sock)) == [Reply(OK, b""), Reply(ERROR, error)]
        assert exchange(bystander, encode_request(GET, b"a"), 1) == [Reply(OK, b"1")]  # unaffected
    assert wait_until(lambda: kvbin.active_connections == 0)


def test_concurrent_clients_share_one_store(kvbin: Server) -> None:
    def client(index: int) -> None:
        with connect(kvbin.port) as sock:
            for round_ in range(50):
                key, value = b"c%d" % index, b"%d:%d" % (index, round_)
                replies = exchange(sock, encode_request(SET, key, value) + encode_request(GET, key), 2)
                assert replies == [Reply(OK, b""), Reply(OK, value)]

    threads = [threading.Thread(target=client, args=(index,)) for index in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with connect(kvbin.port) as sock:
        assert exchange(sock, encode_request(GET, b"c15"), 1) == [Reply(OK, b"15:49")]


def test_sets_are_appended_in_redis_format_and_replayed(serve: ServerFactory, tmp_path: Path) -> None:
    path = str(tmp_path / "kvbin.aof")
    handler = KvbinHandler(appendonly=path, appendfsync="always")
    server = serve(handler)
    with connect(server.port) as sock:
        wire = encode_request(SET, b"k", b"v\r\n\x00") + encode_request(SET, b"j", b"")
        assert exchange(sock, wire, 2) == [Reply(OK, b"")] * 2
    server.stop(deadline=1.0)
    handler.close()
    check = subprocess.run([tool("redis-check-aof"), path], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    again = KvbinHandler(appendonly=path)
    try:
        client = again.kv.new_client()
        assert client.execute([b"GET", b"k"]) == b"v\r\n\x00"
        assert client.execute([b"GET", b"j"]) == b""
    finally:
        again.close()
