"""Random command sequences give the same replies from railcar's store as from a real redis-server."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from railcar.kv.server import KvServer
from tests.kv.differential import RedisConnection, StoreConnection, same_reply

KEYS = [b"k1", b"k2", b"{k}3"]
WORDS = [
    b"",
    b"0",
    b"1",
    b"-1",
    b"2",
    b"10",
    b"-3",
    b"100",
    b"007",
    b"3.5",
    b"-0.25",
    b"1e3",
    b"inf",
    b"abc",
    b"x y",
    b"9223372036854775807",
    b"-9223372036854775808",
    b"9223372036854775808",
    b"k*",
    b"*",
    b"?1",
    b"[kx]?",
]
OPTIONS = [
    b"NX",
    b"XX",
    b"GT",
    b"LT",
    b"GET",
    b"EX",
    b"PX",
    b"KEEPTTL",
    b"PERSIST",
    b"EXAT",
    b"PXAT",
    b"count",
]
COMMANDS = [
    # strings
    b"GET", b"SET", b"GETEX", b"GETDEL", b"GETSET", b"SETNX", b"SETEX", b"PSETEX", b"MGET", b"MSET",
    b"MSETNX", b"APPEND", b"STRLEN", b"GETRANGE", b"SETRANGE", b"INCR", b"DECR", b"INCRBY", b"DECRBY",
    b"INCRBYFLOAT",
    # keyspace and expiry
    b"DEL", b"UNLINK", b"EXISTS", b"TYPE", b"KEYS", b"RENAME", b"RENAMENX", b"EXPIRE", b"PEXPIRE",
    b"EXPIREAT", b"TTL", b"PERSIST", b"EXPIRETIME", b"SELECT",
    # lists, hashes, sets
    b"LPUSH", b"RPUSH", b"LPUSHX", b"RPUSHX", b"LPOP", b"RPOP", b"LRANGE", b"LLEN", b"LINDEX", b"LSET",
    b"LREM", b"LTRIM", b"LINSERT", b"LPOS", b"LMOVE", b"RPOPLPUSH", b"HSET", b"HSETNX", b"HGET", b"HMGET",
    b"HGETALL", b"HDEL", b"HEXISTS", b"HLEN",
    b"HKEYS", b"HVALS", b"HINCRBY", b"HINCRBYFLOAT", b"HSTRLEN", b"SADD", b"SREM", b"SMEMBERS",
    b"SISMEMBER", b"SMISMEMBER", b"SCARD", b"SINTER", b"SUNION", b"SDIFF", b"SMOVE", b"SINTERSTORE",
    b"SUNIONSTORE", b"SDIFFSTORE", b"SINTERCARD", b"SSCAN", b"HSCAN", b"COPY",
    # connection and transactions
    b"PING", b"ECHO", b"MULTI", b"EXEC", b"DISCARD", b"WATCH", b"UNWATCH", b"NOSUCHCOMMAND",
]  # fmt: skip

word = st.one_of(st.sampled_from(KEYS), st.sampled_from(WORDS), st.sampled_from(OPTIONS))
request = st.tuples(st.sampled_from(COMMANDS), st.lists(word, max_size=5)).map(
    lambda parts: [parts[0].lower() if len(parts[1]) % 2 else parts[0], *parts[1]]
)
# Commands with a key first most of the time, so that they meet each other's data.
keyed = st.tuples(st.sampled_from(COMMANDS), st.sampled_from(KEYS), st.lists(word, max_size=4)).map(
    lambda parts: [parts[0], parts[1], *parts[2]]
)


@pytest.fixture
def pair(redis_port: int) -> Iterator[tuple[RedisConnection, StoreConnection]]:
    redis = RedisConnection(redis_port)
    yield redis, StoreConnection()
    redis.close()


def run_same(
    redis: RedisConnection, store: StoreConnection, requests: list[list[bytes]], resp3: bool = False
) -> None:
    for reset in ([b"DISCARD"], [b"SELECT", b"0"], [b"FLUSHALL"], [b"HELLO", b"3" if resp3 else b"2"]):
        redis.call(reset)  # HELLO's reply holds the connection id: not compared
        store.call(reset)
    queued: list[bytes] = []
    history: list[list[bytes]] = []
    for args in requests:
        history.append(args)
        expected = redis.call(args)
        got = store.call(args)
        assert same_reply(args, queued, expected, got), (history, expected, got)
        if got == b"+QUEUED\r\n":
            queued.append(args[0].lower())
        elif args[0].lower() in (b"exec", b"discard"):
            queued = []


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(requests=st.lists(st.one_of(keyed, keyed, request), min_size=1, max_size=25), resp3=st.booleans())
def test_random_command_sequences_match_redis(
    pair: tuple[RedisConnection, StoreConnection], requests: list[list[bytes]], resp3: bool
) -> None:
    run_same(*pair, requests, resp3)


def test_expiry_options_match_redis(pair: tuple[RedisConnection, StoreConnection]) -> None:
    future = str(int(time.time()) + 1000).encode()
    past = b"1000"
    run_same(
        *pair,
        [
            [b"SET", b"a", b"1", b"EX", b"100"],
            [b"TTL", b"a"],
            [b"EXPIRE", b"a", b"50", b"GT"],
            [b"EXPIRE", b"a", b"500", b"GT"],
            [b"TTL", b"a"],
            [b"EXPIRE", b"a", b"600", b"LT"],
            [b"EXPIRE", b"a", b"60", b"LT"],
            [b"TTL", b"a"],
            [b"EXPIRE", b"a", b"10", b"NX"],
            [b"PERSIST", b"a"],
            [b"EXPIRE", b"a", b"10", b"XX"],
            [b"EXPIRE", b"a", b"10", b"GT"],
            [b"EXPIRE", b"a", b"10", b"LT"],
            [b"TTL", b"a"],
            [b"EXPIREAT", b"a", future],
            [b"EXPIRETIME", b"a"],
            [b"SET", b"b", b"2", b"EXAT", future],
            [b"EXPIRETIME", b"b"],
            [b"SET", b"b", b"3", b"KEEPTTL"],
            [b"EXPIRETIME", b"b"],
            [b"GETEX", b"b", b"PERSIST"],
            [b"TTL", b"b"],
            [b"GETEX", b"b", b"EX", b"100"],
            [b"TTL", b"b"],
            [b"EXPIREAT", b"b", past],
            [b"EXISTS", b"b"],
            [b"SET", b"c", b"1", b"PXAT", past],
            [b"GET", b"c"],
            [b"EXPIRE", b"a", b"-1"],
            [b"GET", b"a"],
            [b"SET", b"d", b"1", b"EX", b"9223372036854775"],
            [b"SET", b"d", b"1", b"EX", b"9223372036854776"],
            [b"EXPIRE", b"d", b"9223372036854775"],
            [b"PEXPIRE", b"d", b"9223372036854775807"],
        ],
    )


def test_short_expiry_passes_on_both(pair: tuple[RedisConnection, StoreConnection]) -> None:
    redis, store = pair
    run_same(redis, store, [[b"SET", b"a", b"1", b"PX", b"50"], [b"SET", b"b", b"2", b"PX", b"5000"]])
    time.sleep(0.15)
    run_same_no_reset = [[b"GET", b"a"], [b"EXISTS", b"a", b"b"], [b"KEYS", b"*"]]
    for args in run_same_no_reset:
        assert same_reply(args, [], redis.call(args), store.call(args))


def test_incrbyfloat_prints_like_redis(pair: tuple[RedisConnection, StoreConnection]) -> None:
    run_same(
        *pair,
        [
            [b"INCRBYFLOAT", b"f", b"0.1"],
            [b"INCRBYFLOAT", b"f", b"0.2"],
            [b"INCRBYFLOAT", b"f", b"1e20"],
            [b"INCRBYFLOAT", b"f", b"-1e20"],
            [b"INCRBYFLOAT", b"f", b"5.0e3"],
            [b"INCRBYFLOAT", b"f", b"-5000.3"],
            [b"INCRBYFLOAT", b"f", b" 1"],
            [b"INCRBYFLOAT", b"f", b"1 "],
            [b"INCRBYFLOAT", b"f", b"1_0"],
            [b"SET", b"g", b"10.5"],
            [b"INCRBYFLOAT", b"g", b"0.1"],
            [b"HINCRBYFLOAT", b"h", b"x", b"2.5"],
            [b"HINCRBYFLOAT", b"h", b"x", b"1e400"],
        ],
    )


def test_unknown_commands_and_arity_match_redis(pair: tuple[RedisConnection, StoreConnection]) -> None:
    run_same(
        *pair,
        [
            [b"FOO"],
            [b"FOO", b"a" * 200, b"b"],
            [b"FOO", b"a b", b"c\x00d"],
            [b"GET"],
            [b"CLIENT"],
            [b"CLIENT", b"NOPE"],
            [b"CONFIG", b"nope", b"x"],
            [b"CLIENT", b"SETNAME", b"a b"],
            [b"CLIENT", b"SETNAME"],
            [b"SELECT", b"16"],
            [b"SELECT", b"x"],
            [b"HELLO", b"4"],
            [b"HELLO", b"x"],
            [b"HELLO", b"2", b"FOO"],
            [b"AUTH", b"x"],
            [b"AUTH", b"a", b"b", b"c"],
            [b"ECHO"],
            [b"PING", b"a", b"b"],
            [b"SCAN", b"x"],
            [b"SCAN", b"0", b"COUNT", b"0"],
            [b"SCAN", b"0", b"TYPE"],
            [b"FLUSHDB", b"x"],
            [b"MULTI"],
            [b"SET", b"a"],
            [b"SET", b"a", b"1"],
            [b"EXEC"],
            [b"MULTI"],
            [b"MULTI"],
            [b"WATCH", b"x"],
            [b"INCR", b"a"],
            [b"SADD", b"a", b"x"],
            [b"EXEC"],
        ],
    )


def test_watch_aborts_exec_when_another_client_writes(redis_port: int) -> None:
    server = KvServer()
    redis_a, redis_b = RedisConnection(redis_port), RedisConnection(redis_port)
    store_a, store_b = StoreConnection(server), StoreConnection(server)
    try:
        script = [
            ("a", [b"FLUSHALL"]),
            ("a", [b"WATCH", b"w"]),
            ("b", [b"SET", b"w", b"1"]),
            ("a", [b"MULTI"]),
            ("a", [b"SET", b"w", b"2"]),
            ("a", [b"EXEC"]),
            ("a", [b"GET", b"w"]),
            ("a", [b"WATCH", b"w"]),
            ("a", [b"MULTI"]),
            ("a", [b"INCR", b"w"]),
            ("a", [b"EXEC"]),
        ]
        for who, args in script:
            redis, store = (redis_a, store_a) if who == "a" else (redis_b, store_b)
            assert same_reply(args, [b"incr"], redis.call(args), store.call(args)), args
    finally:
        redis_a.close()
        redis_b.close()
