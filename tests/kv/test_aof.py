"""The append-only file: it replays to the same store, survives a cut, and redis-check-aof accepts it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from railcar.bench.external import tool
from railcar.kv.aof import AofError, AppendOnlyFile, replay
from railcar.kv.blocking import Blocked, block, serve_ready
from railcar.kv.server import KvServer
from railcar.kv.store import Store
from railcar.proto.resp import Error
from tests.kv.test_differential import keyed, request


def snapshot(server: KvServer) -> list[tuple[dict[bytes, Any], dict[bytes, int]]]:
    return [({k: _plain(v) for k, v in db.data.items()}, dict(db.expires)) for db in server.store.dbs]


def _plain(value: Any) -> Any:
    if isinstance(value, int):
        return b"%d" % value  # a counter INCR kept as an int is the same string
    return list(value) if not isinstance(value, bytes | dict | set) else value


def open_server(path: Path, clock: Any = None) -> KvServer:
    server = KvServer(store=Store(clock=clock) if clock else None)
    report = replay(str(path), server)
    server.open_aof(AppendOnlyFile(str(path), "always", db=report.db))
    return server


def run(server: KvServer, client: Any, *commands: list[bytes]) -> list[Any]:
    server.store.tick()
    replies = [client.execute(args) for args in commands]
    server.flush_aof()
    return replies


def reopen(path: Path, server: KvServer) -> KvServer:
    assert server.aof is not None
    server.aof.close()
    return open_server(path)


def test_changes_replay_to_the_same_store(tmp_path: Path) -> None:
    path = tmp_path / "appendonly.aof"
    server = open_server(path)
    client = server.new_client()
    run(
        server,
        client,
        [b"SET", b"s", b"1", b"EX", b"1000"],
        [b"INCRBYFLOAT", b"f", b"0.1"],
        [b"RPUSH", b"l", b"a", b"b", b"c"],
        [b"LPOP", b"l"],
        [b"HSET", b"h", b"f", b"v"],
        [b"SADD", b"set", b"x", b"y", b"z"],
        [b"SPOP", b"set"],
        [b"SELECT", b"2"],
        [b"SET", b"in2", b"v"],
        [b"PEXPIRE", b"in2", b"500000"],
        [b"MULTI"],
        [b"INCR", b"n"],
        [b"RENAME", b"n", b"m"],
        [b"EXEC"],
        [b"SET", b"unchanged", b"v", b"XX"],  # changes nothing: not written
        [b"SELECT", b"0"],
        [b"GETEX", b"s", b"PERSIST"],
    )
    before = snapshot(server)
    again = reopen(path, server)
    assert snapshot(again) == before
    text = path.read_bytes()
    assert b"PXAT" in text
    assert b"PEXPIREAT" in text
    assert b"SREM" in text  # SPOP's random draw is written as what it drew
    assert b"unchanged" not in text
    assert again.aof is not None
    again.aof.close()
    check = subprocess.run([tool("redis-check-aof"), str(path)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "is valid" in check.stdout


def test_an_expired_key_is_written_as_a_del(tmp_path: Path) -> None:
    clock = [1000.0]
    path = tmp_path / "appendonly.aof"
    server = open_server(path, clock=lambda: clock[0])
    client = server.new_client()
    run(server, client, [b"SET", b"k", b"v", b"PX", b"10"])
    clock[0] += 1
    assert run(server, client, [b"GET", b"k"]) == [None]
    assert path.read_bytes().endswith(b"*2\r\n$3\r\nDEL\r\n$1\r\nk\r\n")


def test_a_cut_last_command_is_reported_and_cut_off(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "appendonly.aof"
    server = open_server(path)
    client = server.new_client()
    run(server, client, [b"SET", b"a", b"1"], [b"SET", b"b", b"2"])
    assert server.aof is not None
    server.aof.close()
    whole = path.read_bytes()
    path.write_bytes(whole[:-5])  # a crash in the middle of the last write
    again = KvServer()
    report = replay(str(path), again)
    assert report.truncated > 0
    assert "incomplete command" in caplog.text
    assert list(again.store.dbs[0].data) == [b"a"]
    assert path.stat().st_size == len(whole) - 5 - report.truncated


def test_a_transaction_cut_before_exec_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "appendonly.aof"
    server = open_server(path)
    client = server.new_client()
    run(
        server,
        client,
        [b"SET", b"before", b"1"],
        [b"MULTI"],
        [b"SET", b"x", b"1"],
        [b"SET", b"y", b"2"],
        [b"EXEC"],
    )
    assert server.aof is not None
    server.aof.close()
    whole = path.read_bytes()
    path.write_bytes(whole[: whole.rindex(b"*1\r\n$4\r\nEXEC")])
    again = KvServer()
    replay(str(path), again)
    assert list(again.store.dbs[0].data) == [b"before"]
    assert path.read_bytes() == whole[: whole.index(b"*1\r\n$5\r\nMULTI")]


def test_a_damaged_file_stops_the_start(tmp_path: Path) -> None:
    path = tmp_path / "appendonly.aof"
    path.write_bytes(b"*1\r\n$4\r\nPING\r\n*1\r\n+OOPS\r\n*1\r\n$4\r\nPING\r\n")
    with pytest.raises(AofError, match="damaged at byte 14"):
        replay(str(path), KvServer())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=st.lists(st.one_of(keyed, keyed, request), min_size=1, max_size=30))
def test_random_sequences_replay_to_the_same_store(tmp_path: Path, requests: list[list[bytes]]) -> None:
    path = tmp_path / f"random-{os.getpid()}-{id(requests)}.aof"
    server = open_server(path)
    client = server.new_client()
    run(server, client, *requests)
    client.discard()
    before = snapshot(server)
    again = reopen(path, server)
    assert snapshot(again) == before
    assert again.aof is not None
    again.aof.close()
    path.unlink()


def test_bgrewriteaof_compacts_the_file_and_keeps_the_store(tmp_path: Path) -> None:
    path = tmp_path / "appendonly.aof"
    server = open_server(path)
    client = server.new_client()
    run(server, client, *([[b"INCR", b"counter"]] * 500))
    run(server, client, [b"RPUSH", b"list", *[b"item%d" % i for i in range(200)]], [b"SET", b"gone", b"x"])
    run(
        server, client, [b"HSET", b"hash", b"a", b"1", b"b", b"2"], [b"SADD", b"set", b"m"], [b"DEL", b"gone"]
    )
    run(server, client, [b"SELECT", b"5"], [b"SET", b"five", b"5", b"EX", b"1000"], [b"SELECT", b"0"])
    grown = path.stat().st_size
    assert server.aof is not None
    assert run(server, client, [b"BGREWRITEAOF"])[0].text == "Background append only file rewriting started"
    run(server, client, [b"INCR", b"counter"], [b"SELECT", b"3"], [b"SET", b"during", b"rewrite"])
    assert server.aof.wait_rewrite(10)
    run(server, client, [b"SET", b"after", b"rewrite"], [b"LPOP", b"list"])
    assert server.aof.rewrites == 1
    assert path.stat().st_size < grown
    assert path.read_bytes().count(b"INCR") == 1  # the 500 before the rewrite became one SET
    before = snapshot(server)
    again = reopen(path, server)
    assert snapshot(again) == before
    assert again.aof is not None
    again.aof.close()
    check = subprocess.run([tool("redis-check-aof"), str(path)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_bgrewriteaof_without_a_file_is_refused() -> None:
    server = KvServer()
    reply = server.new_client().execute([b"BGREWRITEAOF"])
    assert reply.text.startswith("ERR no append-only file")


def test_a_blocked_pop_served_later_is_recorded_as_the_plain_pop(tmp_path: Path) -> None:
    path = tmp_path / "appendonly.aof"
    server = open_server(path)
    waiter, pusher = server.new_client(), server.new_client()
    [blocked] = run(server, waiter, [b"BLPOP", b"jobs", b"0"])
    assert isinstance(blocked, Blocked)
    block(waiter, blocked)
    run(server, pusher, [b"RPUSH", b"jobs", b"a", b"b"], [b"BRPOPLPUSH", b"jobs", b"done", b"0"])
    assert serve_ready(server.store) == [(waiter, [b"jobs", b"a"])]
    server.flush_aof()
    text = path.read_bytes()
    assert b"BLPOP" not in text
    assert b"BRPOPLPUSH" not in text
    assert b"*2\r\n$4\r\nLPOP\r\n$4\r\njobs\r\n" in text
    assert b"*5\r\n$5\r\nLMOVE\r\n" in text
    reopened = reopen(path, server)
    assert snapshot(reopened) == snapshot(server)


def test_config_reports_appendonly_yes_and_refuses_to_turn_it_off(tmp_path: Path) -> None:
    server = open_server(tmp_path / "appendonly.aof")
    client = server.new_client()
    get, refused = run(
        server, client, [b"CONFIG", b"GET", b"appendonly"], [b"CONFIG", b"SET", b"appendonly", b"no"]
    )
    assert get == {b"appendonly": b"yes"}
    assert isinstance(refused, Error)
    assert server.aof is not None
    server.aof.close()
