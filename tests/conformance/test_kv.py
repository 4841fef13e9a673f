"""The key–value server on every engine, driven by redis-py (with hiredis) and by raw RESP bytes."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import hiredis
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from railcar.apps.kv import KvHandler
from railcar.engine.api import Server
from railcar.kv.executor import EXECUTORS
from railcar.proto.resp import PARSERS
from tests.conftest import ServerFactory
from tests.helpers import connect, recv_exactly, wait_until


@pytest.fixture(params=EXECUTORS)
def kv_server(serve: ServerFactory, request: pytest.FixtureRequest) -> Server:
    """The server with each executor of hot requests: the same tests for the C one and for Python."""
    return serve(KvHandler(executor=request.param))


@pytest.fixture
def r(kv_server: Server) -> Iterator[redis.Redis]:
    client = redis.Redis(port=kv_server.port, socket_timeout=10)
    yield client
    client.close()


def test_redis_py_uses_hiredis() -> None:
    assert redis.utils.HIREDIS_AVAILABLE


def test_strings_keys_and_expiry(r: redis.Redis) -> None:
    assert r.ping()
    assert r.set("greeting", "hello")
    assert r.get("greeting") == b"hello"
    assert r.set("greeting", "again", nx=True) is None
    assert r.set("counter", 10, ex=100)
    assert r.incrby("counter", 5) == 15
    assert 99 <= r.ttl("counter") <= 100
    assert r.incrbyfloat("f", 0.1) == pytest.approx(0.1)
    assert r.mset({"a": "1", "b": "2"})
    assert r.mget(["a", "b", "missing"]) == [b"1", b"2", None]
    assert r.append("a", "23") == 3
    assert r.getrange("a", 0, 1) == b"12"
    assert r.getdel("b") == b"2"
    assert r.exists("a", "b") == 1
    assert r.type("a") == b"string"
    assert sorted(r.keys("*")) == [b"a", b"counter", b"f", b"greeting"]
    assert sorted(r.scan_iter(match="g*")) == [b"greeting"]
    assert r.rename("a", "c")
    assert r.expire("c", 50, gt=True) is False  # no TTL counts as infinite
    assert r.persist("counter")
    assert r.ttl("counter") == -1
    assert r.dbsize() == 4
    with pytest.raises(redis.ResponseError, match=r"^value is not an integer or out of range$"):
        r.incr("greeting")


def test_lists_hashes_sets(r: redis.Redis) -> None:
    assert r.rpush("l", "a", "b", "c", "d") == 4
    assert r.lpop("l", 2) == [b"a", b"b"]
    assert r.lrange("l", 0, -1) == [b"c", b"d"]
    assert r.hset("h", mapping={"f1": "v1", "f2": "2"}) == 2
    assert r.hincrby("h", "f2", 3) == 5
    assert r.hgetall("h") == {b"f1": b"v1", b"f2": b"5"}
    assert r.sadd("s", "x", "y") == 2
    assert r.sadd("t", "y", "z") == 2
    assert r.sinter("s", "t") == {b"y"}
    assert r.smembers("s") == {b"x", b"y"}
    with pytest.raises(redis.ResponseError, match=r"^WRONGTYPE "):
        r.get("l")


def test_pipelines_with_and_without_multi(r: redis.Redis) -> None:
    with r.pipeline() as pipe:  # redis-py wraps it in MULTI/EXEC by default
        pipe.set("x", 1).incr("x").get("x")
        assert pipe.execute() == [True, 2, b"2"]
    with r.pipeline(transaction=False) as pipe:
        for index in range(2000):
            pipe.set(f"key:{index}", index)
        for index in range(2000):
            pipe.get(f"key:{index}")
        replies = pipe.execute()
    assert replies[2000:] == [str(index).encode() for index in range(2000)]


def test_watch_transaction_retries_on_conflict(kv_server: Server, r: redis.Redis) -> None:
    other = redis.Redis(port=kv_server.port)
    attempts = []

    def bump(pipe: redis.client.Pipeline) -> None:
        value = int(pipe.get("balance") or 0)
        if not attempts:
            other.set("balance", 100)  # a write between WATCH and EXEC aborts the first attempt
        attempts.append(value)
        pipe.multi()
        pipe.set("balance", value + 1)

    r.transaction(bump, "balance")
    assert attempts == [0, 100]
    assert r.get("balance") == b"101"
    other.close()


def test_resp3_client(kv_server: Server) -> None:
    client = redis.Redis(port=kv_server.port, protocol=3)
    client.hset("h", "f", "v")
    assert client.hgetall("h") == {b"f": b"v"}
    assert client.get("missing") is None
    client.close()


def test_requirepass(serve: ServerFactory) -> None:
    server = serve(KvHandler(requirepass="s3cret"))
    # redis-py counts AuthenticationError as a ConnectionError and retries it with backoff.
    no_retry = Retry(NoBackoff(), 0)
    anonymous = redis.Redis(port=server.port, retry=no_retry)
    with pytest.raises(redis.AuthenticationError):
        anonymous.get("k")
    anonymous.close()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=server.port, password="wrong", retry=no_retry).ping()
    client = redis.Redis(port=server.port, password="s3cret")
    assert client.set("k", "v")
    assert client.get("k") == b"v"
    client.close()


def test_select_isolates_databases(kv_server: Server) -> None:
    zero = redis.Redis(port=kv_server.port, db=0)
    one = redis.Redis(port=kv_server.port, db=1)
    zero.set("k", "zero")
    one.set("k", "one")
    assert zero.get("k") == b"zero"
    assert one.get("k") == b"one"
    zero.close()
    one.close()


def test_large_values_round_trip(r: redis.Redis) -> None:
    value = os.urandom(5 * 1024 * 1024 + 3)
    assert r.set("big", value)
    assert r.get("big") == value
    assert r.strlen("big") == len(value)


def test_concurrent_clients_share_one_store(kv_server: Server) -> None:
    def bump() -> None:
        client = redis.Redis(port=kv_server.port)
        for _ in range(200):
            client.incr("shared")
        client.close()

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client = redis.Redis(port=kv_server.port)
    assert client.get("shared") == b"1600"
    client.close()


def test_a_pipeline_of_large_replies_to_a_slow_reader_is_all_delivered(kv_server: Server) -> None:
    value = b"v" * 100_000
    count = 600  # 60 MB of replies, far over the engines' output high-water mark
    with connect(kv_server.port) as sock:
        sock.sendall(b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$100000\r\n" + value + b"\r\n")
        assert recv_exactly(sock, 5) == b"+OK\r\n"
        sock.sendall(b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n" * count)
        reader = hiredis.Reader()
        got = 0
        while got < count:
            reader.feed(sock.recv(1 << 20))
            while (item := reader.gets()) is not False:
                assert item == value
                got += 1


def raw_exchange(port: int, wire: bytes) -> bytes:
    """Send ``wire``, half-close, and return every byte until the server closes.

    A server that closes with some of the input unread makes the kernel send a reset;
    what arrived before it is still returned.
    """
    received = bytearray()
    with connect(port) as sock:
        try:
            sock.sendall(wire)
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(1 << 20):
                received += chunk
        except (ConnectionResetError, BrokenPipeError, OSError):
            pass
    return bytes(received)


P = b"PING\r\n"
BAD_INPUT = [
    # (what is sent, what Redis 7.0 answers): a +PONG for the last PING means the connection was kept
    (P + b"*x\r\n" + P, b"+PONG\r\n-ERR Protocol error: invalid multibulk length\r\n"),
    (b"*1\r\n+PING\r\n" + P, b"-ERR Protocol error: expected '$', got '+'\r\n"),
    (b"*2\r\n$3\r\nGET\r\n$-1\r\n" + P, b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\n$536870913\r\n" + P, b"-ERR Protocol error: invalid bulk length\r\n"),
    (b'ECHO "unbalanced\r\n' + P, b"-ERR Protocol error: unbalanced quotes in request\r\n"),
    (b"x" * 70_000, b"-ERR Protocol error: too big inline request\r\n"),
    (b"*1\r\n$" + b"1" * 70_000, b"-ERR Protocol error: too big bulk count string\r\n"),
    (b"*" + b"1" * 70_000, b"-ERR Protocol error: too big mbulk count string\r\n"),
    (
        b"NOSUCH a b\r\n" + P,
        b"-ERR unknown command 'NOSUCH', with args beginning with: 'a' 'b' \r\n+PONG\r\n",
    ),
    (b"GET\r\n" + P, b"-ERR wrong number of arguments for 'get' command\r\n+PONG\r\n"),
    (  # an empty array between two requests of one read is skipped
        b"*1\r\n$4\r\nPING\r\n*0\r\n*1\r\n$4\r\nPING\r\n",
        b"+PONG\r\n+PONG\r\n",
    ),
    (b"*0\r\n*-5\r\n\r\n  \r\n" + P, b"+PONG\r\n"),
    (b"*1\r\n$4\r\nPINGxx" + P, b"+PONG\r\n+PONG\r\n"),
    (b"PING\nECHO 'a b'\r\n" + P, b"+PONG\r\n$3\r\na b\r\n+PONG\r\n"),
    (P + b"QUIT\r\n" + P, b"+PONG\r\n+OK\r\n"),
]


@pytest.mark.parametrize(("wire", "expected"), BAD_INPUT, ids=range(len(BAD_INPUT)))
def test_bad_input_gets_redis_reply_and_close(
    kv_server: Server, redis_port: int, wire: bytes, expected: bytes
) -> None:
    assert raw_exchange(redis_port, wire) == expected  # what the real redis-server does
    with connect(kv_server.port) as bystander:
        assert raw_exchange(kv_server.port, wire) == expected
        bystander.sendall(b"PING\r\n")
        assert recv_exactly(bystander, 7) == b"+PONG\r\n"  # other clients are unaffected
    assert wait_until(lambda: kv_server.active_connections == 0)


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("parser", PARSERS)
def test_every_parser_serves_pipelines_and_bad_input(
    serve: ServerFactory, parser: str, executor: str
) -> None:
    server = serve(KvHandler(parser=parser, executor=executor))
    client = redis.Redis(port=server.port)
    with client.pipeline(transaction=False) as pipe:
        for index in range(500):
            pipe.set(f"k{index}", "x" * index)
        pipe.execute()
    assert client.get("k499") == b"x" * 499
    client.close()
    for wire, expected in BAD_INPUT:
        assert raw_exchange(server.port, wire) == expected


def test_a_client_that_never_reads_does_not_stall_the_others(kv_server: Server) -> None:
    value = b"v" * 100_000
    with connect(kv_server.port, rcvbuf=64 * 1024) as hog, connect(kv_server.port) as other:
        hog.sendall(b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$100000\r\n" + value + b"\r\n")
        assert recv_exactly(hog, 5) == b"+OK\r\n"
        hog.sendall(b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n" * 400)  # 40 MB of replies nobody reads
        for _ in range(20):
            other.sendall(b"PING\r\n")
            assert recv_exactly(other, 7) == b"+PONG\r\n"
        other.sendall(b"*2\r\n$6\r\nSTRLEN\r\n$3\r\nbig\r\n")
        assert recv_exactly(other, 9) == b":100000\r\n"


def test_expired_keys_go_away_on_an_idle_server(kv_server: Server, r: redis.Redis) -> None:
    for index in range(50):
        r.set(f"short:{index}", "v", px=20)
    r.set("kept", "v")
    handler = kv_server.handler
    assert isinstance(handler, KvHandler)
    db = handler.kv.store.dbs[0]
    assert wait_until(lambda: len(db.data) == 1)  # nobody read them: the background sweep did
    assert list(db.data) == [b"kept"]


def test_blpop_waits_for_a_push_from_another_client(kv_server: Server, r: redis.Redis) -> None:
    results: list[object] = []
    waiter = threading.Thread(target=lambda: results.append(r.blpop(["none", "jobs"], timeout=10)))
    waiter.start()
    other = redis.Redis(port=kv_server.port, socket_timeout=10)
    assert wait_until(lambda: other.info("clients")["connected_clients"] == 2)
    assert other.rpush("jobs", "first", "second") == 2  # the waiter takes "first" before anyone else
    waiter.join(10)
    assert results == [(b"jobs", b"first")]
    assert other.lrange("jobs", 0, -1) == [b"second"]
    other.close()


def test_blocked_clients_are_served_first_come_and_the_rest_time_out(kv_server: Server) -> None:
    clients = [redis.Redis(port=kv_server.port, socket_timeout=10) for _ in range(3)]
    results: dict[int, object] = {}

    def wait(index: int) -> None:
        results[index] = clients[index].brpop(["q"], timeout=0.5)

    pusher = redis.Redis(port=kv_server.port, socket_timeout=10)
    threads = []
    for index in range(3):
        threads.append(threading.Thread(target=wait, args=(index,)))
        threads[-1].start()
        # the order they block in is the order they are served
        assert wait_until(lambda: pusher.info("clients")["blocked_clients"] == len(threads))
    assert pusher.lpush("q", "a", "b") == 2  # list [b, a]: BRPOP takes a, then b
    for thread in threads:
        thread.join(10)
    assert results == {0: (b"q", b"a"), 1: (b"q", b"b"), 2: None}
    assert pusher.exists("q") == 0
    for client in [*clients, pusher]:
        client.close()


def test_blmove_and_requests_pipelined_behind_a_blocked_one(kv_server: Server) -> None:
    with connect(kv_server.port) as sock:
        sock.sendall(b"BLMOVE src dst LEFT RIGHT 10\r\nLLEN dst\r\nPING\r\n")
        pusher = redis.Redis(port=kv_server.port, socket_timeout=10)
        time.sleep(0.2)
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(100)  # blocked: nothing, not even the PING behind it
        sock.settimeout(10)
        assert pusher.rpush("src", "x") == 1
        expected = b"$1\r\nx\r\n:1\r\n+PONG\r\n"
        assert recv_exactly(sock, len(expected)) == expected
        assert pusher.lrange("dst", 0, -1) == [b"x"]
        pusher.close()


def test_blocking_commands_inside_multi_and_bad_timeouts(r: redis.Redis) -> None:
    pipe = r.pipeline(transaction=True)
    pipe.blpop(["empty"], timeout=0)
    pipe.brpoplpush("empty", "dst", timeout=0)
    assert pipe.execute() == [None, None]  # inside EXEC they answer at once, as on a timeout
    r.set("string", "x")
    with pytest.raises(redis.ResponseError, match=r"^WRONGTYPE"):
        r.blpop(["string"], timeout=1)
    for bad, text in [("-1", "timeout is negative"), ("soon", "timeout is not a float or out of range")]:
        with pytest.raises(redis.ResponseError, match=f"^{text}$"):
            r.execute_command("BLPOP", "k", bad)


def test_a_blocked_client_that_leaves_is_forgotten(kv_server: Server, r: redis.Redis) -> None:
    with connect(kv_server.port) as sock:
        sock.sendall(b"BLPOP gone 0\r\n")
        time.sleep(0.2)
    assert wait_until(lambda: r.info("clients")["connected_clients"] == 1)
    assert r.rpush("gone", "kept") == 1
    assert r.lrange("gone", 0, -1) == [b"kept"]
