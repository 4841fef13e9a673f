"""maxmemory with the noeviction policy: growing commands refused past the limit, as Redis does."""

from __future__ import annotations

import pytest

from railcar.kv.memory import OOM, parse_memory
from railcar.proto.resp import OK, QUEUED, Error
from tests.kv.differential import RedisConnection, StoreConnection
from tests.kv.test_store import run, session


@pytest.mark.parametrize(
    ("text", "size"),
    [("0", 0), ("100", 100), ("10K", 10_000), ("10kb", 10_240), ("1mb", 1 << 20), ("2g", 2 * 10**9)],
)
def test_parse_memory_follows_redis_notation(text: str, size: int) -> None:
    assert parse_memory(text) == size


@pytest.mark.parametrize("text", ["", "-5", "1.5gb", "12xb", "mb"])
def test_parse_memory_refuses_what_redis_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a memory size"):
        parse_memory(text)


def test_growing_commands_are_refused_past_the_limit_and_freeing_lifts_it() -> None:
    server, client, _ = session()
    assert run(client, "CONFIG", "SET", "maxmemory", "200") is OK
    assert run(client, "SET", "big", b"x" * 150) is OK  # under the limit when it starts
    assert server.store.used > 200
    assert run(client, "SET", "k", "v") is OOM
    assert run(client, "LPUSH", "list", "a") is OOM
    assert run(client, "INCR", "n") is OOM
    assert run(client, "GET", "big") == b"x" * 150  # reads go on
    assert run(client, "EXPIRE", "big", "100") == 1  # so do commands that cannot grow the data
    assert run(client, "DEL", "big") == 1
    assert run(client, "SET", "k", "v") is OK
    assert run(client, "CONFIG", "SET", "maxmemory", "0") is OK
    assert run(client, "SET", "big", b"x" * 1000) is OK


def test_inside_multi_everything_but_exec_and_discard_is_refused() -> None:
    _, client, _ = session()
    assert run(client, "MULTI") is OK
    assert run(client, "SET", "big", b"x" * 300) is QUEUED
    assert run(client, "GET", "big") is QUEUED
    assert run(client, "EXEC") == [OK, b"x" * 300]
    assert run(client, "CONFIG", "SET", "maxmemory", "100") is OK
    assert run(client, "MULTI") is OK
    assert run(client, "GET", "big") is OOM  # queueing takes memory
    reply = run(client, "EXEC")
    assert isinstance(reply, Error)
    assert reply.text.startswith("EXECABORT")


def test_config_set_changes_nothing_when_one_setting_is_bad() -> None:
    server, client, _ = session()
    reply = run(client, "CONFIG", "SET", "maxmemory", "100mb", "appendfsync", "sometimes")
    assert isinstance(reply, Error)
    assert server.maxmemory == 0
    assert run(client, "CONFIG", "SET", "maxmemory", "1mb") is OK
    assert run(client, "CONFIG", "GET", "maxmemory") == {b"maxmemory": b"1048576"}
    reply = run(client, "CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
    assert isinstance(reply, Error)
    assert "only noeviction" in reply.text
    assert run(client, "CONFIG", "SET", "maxmemory-policy", "NoEviction") is OK
    assert run(client, "CONFIG", "GET", "maxmemory-policy") == {b"maxmemory-policy": b"noeviction"}


def test_replies_past_the_limit_are_redis_replies(redis_port: int) -> None:
    """Both servers over a 1-byte limit (redis-server always is): the same bytes back."""
    redis, railcar = RedisConnection(redis_port), StoreConnection()
    requests = [
        [b"CONFIG", b"SET", b"maxmemory", b"abc"],
        [b"CONFIG", b"SET", b"maxmemory-policy", b"sometimes"],
        [b"SET", b"k", b"v"],
        [b"CONFIG", b"SET", b"maxmemory", b"1"],
        [b"SET", b"k", b"w"],
        [b"RPUSH", b"list", b"a"],
        [b"GET", b"k"],
        [b"MULTI"],
        [b"GET", b"k"],
        [b"EXEC"],
        [b"MULTI"],
        [b"DISCARD"],
        [b"DEL", b"other"],
    ]
    try:
        for request in requests:
            assert railcar.call(request) == redis.call(request), request
    finally:
        redis.call([b"CONFIG", b"SET", b"maxmemory", b"0"])
        redis.call([b"FLUSHALL"])
        redis.close()
