"""The NATS client's sans-I/O pieces: URLs and the server pool, NUIDs, the request table."""

from __future__ import annotations

import asyncio

import pytest

from railcar.errors import RequestTimeout
from railcar.nats.errors import NoResponders
from railcar.nats.nuid import Nuid
from railcar.nats.requests import RequestTable
from railcar.nats.servers import ServerPool, parse_url
from railcar.proto.nats import Headers, Msg


def test_parse_url() -> None:
    server = parse_url("nats://u%40x:p@example.com:4333")
    assert (server.host, server.port, server.user, server.password) == ("example.com", 4333, "u@x", "p")
    assert parse_url("127.0.0.1").port == 4222
    assert parse_url("[::1]:5000").address == "[::1]:5000"
    for bad in ["http://x:1", "nats://x:99999", "nats://:1"]:
        with pytest.raises(ValueError, match="bad NATS URL"):
            parse_url(bad)


def test_pool_learns_and_rotates() -> None:
    pool = ServerPool(["a:1", "b:2"], randomize=False)
    assert pool.learn(["b:2", "c:3", "not a url:x"]) == 1
    assert sorted(s.address for s in pool.servers) == ["a:1", "b:2", "c:3"]
    assert next(s for s in pool.servers if s.address == "c:3").implicit
    seen = [pool.next_server().address for _ in range(6)]
    assert sorted(seen[:3]) == ["a:1", "b:2", "c:3"]
    assert seen[3:] == seen[:3]  # every server once before any twice
    with pytest.raises(ValueError, match="at least one"):
        ServerPool([])


def test_pool_drops_servers_that_used_up_their_reconnects() -> None:
    pool = ServerPool(["a:1", "b:2", "c:3"], randomize=False)
    a, b, c = pool.servers
    a.reconnects, b.reconnects, c.reconnects = 3, 2, 0
    pool.drop_exhausted(None)  # no limit
    assert len(pool.servers) == 3
    pool.drop_exhausted(3)
    assert pool.servers == [b, c]
    assert pool.next_server() is b
    pool.drop_exhausted(2)
    assert pool.servers == [c]
    assert pool.next_server() is c


def test_nuids_are_unique_and_22_characters() -> None:
    nuid = Nuid()
    ids = {nuid.next() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(len(i) == 22 and i.isalnum() for i in ids)
    assert Nuid().next()[:12] != nuid.next()[:12]


def test_request_table_settles_by_token() -> None:
    loop = asyncio.new_event_loop()
    try:
        table = RequestTable()
        first, second, third = (loop.create_future() for _ in range(3))
        r1 = table.new(first, "svc.a")
        r2 = table.new(second, "svc.b")
        r3 = table.new(third, "svc.c")
        assert r1.startswith(table.prefix.encode() + b".")
        assert len({r1, r2, r3}) == 3
        reply = Msg(r2, 1, b"", b"two")
        table.deliver(reply)
        assert second.result() is reply
        table.deliver(Msg(r1, 1, b"", b"", Headers(status=503)))
        with pytest.raises(NoResponders, match=r"svc\.a"):
            first.result()
        table.expire(r3, 0.5)
        with pytest.raises(RequestTimeout, match=r"svc\.c"):
            third.result()
        table.deliver(Msg(r3, 1, b"", b"late"))
        assert table.late_replies == 1
        assert len(table) == 0
        fourth = loop.create_future()
        table.new(fourth, "svc.d")
        table.fail_all(ConnectionError("gone"))
        assert isinstance(fourth.exception(), ConnectionError)
    finally:
        loop.close()
