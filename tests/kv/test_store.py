"""The store and the commands in-process: expiry, accounting, SCAN, RESP3 shapes, AUTH, transactions."""

from __future__ import annotations

import pytest

from railcar.kv.blocking import Blocked, block, serve_ready
from railcar.kv.client import Client
from railcar.kv.server import KvServer
from railcar.kv.store import Store, string_bytes
from railcar.proto.resp import NULL_ARRAY, OK, QUEUED, Error, Verbatim


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def session(requirepass: str | None = None) -> tuple[KvServer, Client, Clock]:
    clock = Clock()
    server = KvServer(requirepass=requirepass, store=Store(clock=clock))
    return server, server.new_client(), clock


def run(client: Client, *words: str | bytes) -> object:
    client.server.store.tick()
    return client.execute([w if isinstance(w, bytes) else w.encode() for w in words])


def test_lazy_expiry_deletes_on_access() -> None:
    server, client, clock = session()
    assert run(client, "SET", "k", "v", "PX", "100") is OK
    clock.now += 0.1
    assert run(client, "GET", "k") == b"v"  # Redis: alive until now passes the expiry time
    clock.now += 0.001
    assert run(client, "GET", "k") is None
    assert not server.store.dbs[0].data


def test_active_expiry_sweeps_keys_nobody_reads() -> None:
    server, client, clock = session()
    for index in range(500):
        run(client, "SET", f"k{index}", "v", "PX", "10")
    run(client, "SET", "forever", "v")
    clock.now += 1
    server.store.tick()
    deleted = server.store.active_expire(budget=1.0, every=0)
    assert deleted == 500
    assert list(server.store.dbs[0].data) == [b"forever"]
    assert server.store.active_expire(budget=1.0, every=10) == 0  # runs at most every 'every' s


def test_byte_accounting_returns_to_zero() -> None:
    server, client, _ = session()
    run(client, "SET", "s", "x" * 100)
    run(client, "RPUSH", "l", "a", "bb", "ccc")
    run(client, "HSET", "h", "f", "v", "g", "w")
    run(client, "SADD", "z", "m1", "m2")
    run(client, "APPEND", "s", "yy")
    assert server.store.used > 100
    run(client, "LPOP", "l")
    run(client, "HDEL", "h", "f")
    run(client, "SREM", "z", "m1")
    run(client, "DEL", "s", "l", "h", "z")
    assert server.store.used == 0


@pytest.mark.parametrize(
    "emptying",
    [
        [["RPUSH", "k", "a"], ["LPOP", "k"]],
        [["RPUSH", "k", "a", "b"], ["RPOP", "k", "5"]],
        [["RPUSH", "k", "a"], ["BLPOP", "k", "0"]],
        [
            ["RPUSH", "k", "a"],
            ["LMOVE", "k", "k", "LEFT", "RIGHT"],
            ["LMOVE", "k", "dst", "LEFT", "LEFT"],
            ["DEL", "dst"],
        ],
        [["RPUSH", "k", "a"], ["RPOPLPUSH", "k", "k"], ["LPOP", "k"]],
        [["SADD", "k", "m"], ["SREM", "k", "m"]],
        [["SADD", "k", "m"], ["SPOP", "k"]],
        [["SADD", "k", "m"], ["SMOVE", "k", "dst", "m"], ["SREM", "dst", "m"]],
        [["HSET", "k", "f", "v"], ["HDEL", "k", "f"]],
    ],
)
def test_emptying_a_container_gives_back_every_byte(emptying: list[list[str]]) -> None:
    server, client, _ = session()
    for words in emptying:
        run(client, *words)
    assert server.store.dbs[0].data == {}
    assert server.store.used == 0


def test_scan_visits_every_key_once() -> None:
    _, client, _ = session()
    for index in range(95):
        run(client, "SET", f"key:{index}", "v")
    run(client, "RPUSH", "list", "x")
    cursor = b"0"
    seen: list[bytes] = []
    while True:
        reply = run(client, "SCAN", cursor, "MATCH", "key:*", "COUNT", "7")
        assert isinstance(reply, list)
        cursor, keys = reply
        seen.extend(keys)
        if cursor == b"0":
            break
    assert sorted(seen) == sorted(f"key:{i}".encode() for i in range(95))
    assert run(client, "SCAN", "0", "TYPE", "list", "COUNT", "1000") == [b"0", [b"list"]]


def test_hello_3_switches_replies_to_resp3_shapes() -> None:
    _, client, _ = session()
    reply = run(client, "HELLO", "3")
    assert isinstance(reply, dict)
    assert reply[b"proto"] == 3
    assert client.resp3
    run(client, "HSET", "h", "f", "v")
    assert run(client, "HGETALL", "h") == {b"f": b"v"}
    run(client, "SADD", "s", "m")
    assert run(client, "SMEMBERS", "s") == {b"m"}


def test_requirepass_gates_commands_until_auth() -> None:
    _, client, _ = session(requirepass="secret")
    assert run(client, "GET", "k") == Error("NOAUTH Authentication required.")
    assert run(client, "AUTH", "wrong") == Error(
        "WRONGPASS invalid username-password pair or user is disabled."
    )
    assert run(client, "PING") == Error("NOAUTH Authentication required.")
    assert run(client, "AUTH", "default", "secret") is OK
    assert run(client, "PING") is not None
    assert run(client, "GET", "k") is None


def test_hello_can_authenticate() -> None:
    _, client, _ = session(requirepass="secret")
    assert isinstance(run(client, "HELLO", "3"), Error)
    assert isinstance(run(client, "HELLO", "3", "AUTH", "default", "secret", "SETNAME", "me"), dict)
    assert client.authenticated
    assert run(client, "CLIENT", "GETNAME") == b"me"


def test_transactions() -> None:
    server, client, _ = session()
    other = server.new_client()
    assert run(client, "MULTI") is OK
    assert run(client, "SET", "a", "1") is QUEUED
    assert run(client, "INCR", "a") is QUEUED
    assert run(client, "EXEC") == [OK, 2]
    assert run(client, "WATCH", "a") is OK
    run(other, "SET", "a", "5")
    run(client, "MULTI")
    run(client, "INCR", "a")
    assert run(client, "EXEC") is NULL_ARRAY
    assert run(client, "GET", "a") == b"5"
    assert not server.store.watchers  # EXEC forgets the WATCHes


def test_quit_answers_and_marks_the_client_closing() -> None:
    _, client, _ = session()
    run(client, "MULTI")
    assert run(client, "QUIT") is OK
    assert client.closing


def test_config_set_is_kept_and_echoed() -> None:
    _, client, _ = session()
    assert run(client, "CONFIG", "SET", "save", "900 1", "hz", "20") is OK
    assert run(client, "CONFIG", "GET", "save") == {b"save": b"900 1"}
    assert run(client, "CONFIG", "GET", "h*") == {b"hz": b"20"}


def test_command_alone_and_with_subcommands() -> None:
    _, client, _ = session()
    every = run(client, "COMMAND")
    assert isinstance(every, list)
    assert [b"get", 2, [], 0, 0, 0] in every
    assert run(client, "COMMAND", "COUNT") == len(every)
    assert run(client, "COMMAND", "INFO", "get", "nosuch") == [[b"get", 2, [], 0, 0, 0], None]
    docs = run(client, "COMMAND", "DOCS", "set")
    assert isinstance(docs, dict)
    assert list(docs) == [b"set"]


def test_random_members_and_fields() -> None:
    _, client, _ = session()
    run(client, "SADD", "s", "a", "b", "c")
    assert run(client, "SRANDMEMBER", "s") in {b"a", b"b", b"c"}
    assert sorted(run(client, "SRANDMEMBER", "s", "5")) == [b"a", b"b", b"c"]  # type: ignore[arg-type]
    assert len(run(client, "SRANDMEMBER", "s", "-5")) == 5  # type: ignore[arg-type]
    assert run(client, "SPOP", "s", "2") <= {b"a", b"b", b"c"}  # type: ignore[operator]
    assert run(client, "SCARD", "s") == 1
    run(client, "SPOP", "s")
    assert run(client, "EXISTS", "s") == 0
    assert run(client, "SPOP", "s", "1") == set()
    run(client, "HSET", "h", "f", "v", "g", "w")
    assert run(client, "HRANDFIELD", "h") in {b"f", b"g"}
    pairs = run(client, "HRANDFIELD", "h", "2", "WITHVALUES")
    assert isinstance(pairs, list)
    assert dict(zip(pairs[::2], pairs[1::2], strict=True)) == {b"f": b"v", b"g": b"w"}
    assert run(client, "HRANDFIELD", "missing", "3") == []


def test_config_set_requirepass_takes_effect_for_new_connections() -> None:
    server, client, _ = session()
    assert run(client, "CONFIG", "SET", "requirepass", "pw") is OK
    assert run(client, "GET", "k") is None  # this connection stays authenticated, as in Redis
    newcomer = server.new_client()
    assert run(newcomer, "GET", "k") == Error("NOAUTH Authentication required.")
    assert run(newcomer, "AUTH", "pw") is OK
    assert run(client, "CONFIG", "SET", "requirepass", "") is OK
    assert run(server.new_client(), "GET", "k") is None
    assert isinstance(run(client, "CONFIG", "SET", "appendfsync", "sometimes"), Error)


def test_info_sections() -> None:
    _, client, _ = session()
    run(client, "SET", "k", "v")
    text = run(client, "INFO")
    assert isinstance(text, Verbatim)
    for needle in (
        b"redis_version:7.0.15",
        b"connected_clients:1",
        b"used_memory:",
        b"aof_enabled:0",
        b"db0:keys=1",
    ):
        assert needle in text.data
    only = run(client, "INFO", "keyspace")
    assert isinstance(only, Verbatim)
    assert only.data.startswith(b"# Keyspace")


def test_string_bytes_reads_every_string_and_no_other_type() -> None:
    server = KvServer()
    client = server.new_client()
    for command in (
        ["SET", "s", "text"],
        ["SET", "n", "41"],
        ["INCR", "n"],
        ["RPUSH", "l", "x"],
        ["SADD", "z", "x"],
    ):
        client.execute([word.encode() for word in command])
    data = server.store.dbs[0].data
    assert [string_bytes(data[key]) for key in (b"s", b"n", b"l", b"z")] == [b"text", b"42", None, None]


def test_a_woken_client_pops_from_the_key_that_got_a_list_first() -> None:
    server, waiter, _ = session()
    pusher = server.new_client()
    blocked = run(waiter, "BLPOP", "a", "b", "0")
    assert isinstance(blocked, Blocked)
    block(waiter, blocked)
    assert run(pusher, "MULTI") is OK
    run(pusher, "LPUSH", "b", "x")
    run(pusher, "LPUSH", "a", "y")
    assert run(pusher, "EXEC") == [1, 1]
    assert serve_ready(server.store) == [(waiter, [b"b", b"x"])]  # as Redis: b became a list first
    assert run(pusher, "LRANGE", "a", "0", "-1") == [b"y"]


def test_config_set_appendonly_cannot_turn_the_file_on_or_off_while_running() -> None:
    server, client, _ = session()
    assert run(client, "CONFIG", "GET", "appendonly") == {b"appendonly": b"no"}
    refused = run(client, "CONFIG", "SET", "appendonly", "yes", "save", "1 1")
    assert isinstance(refused, Error)
    assert "appendonly" in str(refused)
    assert "restart" in str(refused)
    assert run(client, "CONFIG", "GET", "save") == {b"save": b""}  # all or nothing
    assert isinstance(run(client, "CONFIG", "SET", "appendonly", "maybe"), Error)
    assert run(client, "CONFIG", "SET", "appendonly", "NO") is OK  # what it already is
    assert server.aof is None
