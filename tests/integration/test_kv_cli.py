"""``railcar serve kv`` as a user runs it, driven by a scripted redis-cli session like a real redis-server."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from railcar import ENGINES
from railcar.bench.external import tool
from railcar.proto import kvbin
from tests.helpers import engine_param

SESSION = """\
PING
SET greeting "hello world"
GET greeting
APPEND greeting !
STRLEN greeting
SET n 41
INCR n
INCRBYFLOAT n 0.5
GETSET n 0
MSET a 1 b 2
MGET a b nothing
SETRANGE a 3 xyz
GETRANGE a 0 -1
EXPIRE a 100
TTL a
PERSIST a
TTL a
TYPE a
RENAME a c
EXISTS a c
RPUSH list one two three
LRANGE list 0 -1
LPOP list
LINDEX list -1
HSET user name ada lang python
HGET user name
HINCRBY user visits 3
SADD tags x y
SISMEMBER tags y
SCARD tags
MULTI
INCR counter
INCR counter
EXEC
SELECT 3
DBSIZE
SELECT 0
DEL greeting c list user tags
GET greeting
INCR greeting greeting
NOSUCHCOMMAND with args
LPUSH n x
CONFIG GET appendonly
"""


@contextlib.contextmanager
def serving(*options: str) -> Iterator[int]:
    """``railcar serve kv`` with ``options`` on a free port; yields the port, checks it ended cleanly."""
    with subprocess.Popen(
        [sys.executable, "-m", "railcar", "serve", "kv", "--port", "0", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()
            assert first.startswith("listening on 127.0.0.1:"), first
            yield int(first.rsplit(":", 1)[1])
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=10)
            assert "Traceback" not in err, err


@pytest.fixture(params=[engine_param(name) for name in ENGINES])
def railcar_kv(request: pytest.FixtureRequest) -> Iterator[int]:
    with serving("--engine", request.param) as port:
        yield port


def cli_session(port: int, script: str) -> str:
    result = subprocess.run(
        [tool("redis-cli"), "-p", str(port)],
        input=script,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout


def test_redis_cli_session_reads_the_same_as_on_redis_server(railcar_kv: int, redis_port: int) -> None:
    cli_session(redis_port, "FLUSHALL\n")
    expected = cli_session(redis_port, SESSION)
    got = cli_session(railcar_kv, SESSION)
    assert got == expected
    assert "hello world\n12\n" in got
    assert "WRONGTYPE Operation against a key holding the wrong kind of value" in got


def test_requirepass_from_the_command_line() -> None:
    with serving("--requirepass", "pw") as port:
        assert cli_session(port, "GET k\n").strip() == "NOAUTH Authentication required."
        out = subprocess.run(
            [tool("redis-cli"), "-p", str(port), "-a", "pw", "--no-auth-warning", "SET", "k", "v"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        assert out.strip() == "OK"


def test_maxmemory_from_the_command_line() -> None:
    with serving("--maxmemory", "1kb") as port:
        got = cli_session(port, f"SET big {'x' * 2000}\nSET k v\nGET k\nDEL big\nSET k v\nINFO memory\n")
        lines = got.splitlines()  # redis-cli follows an error with an empty line; nil is one too
        oom = "OOM command not allowed when used memory > 'maxmemory'."
        assert lines[:6] == ["OK", oom, "", "", "1", "OK"]
        assert "maxmemory:1024" in lines


def test_kvbin_writes_an_append_only_file_that_the_resp_server_reads(tmp_path: Path) -> None:
    aof = str(tmp_path / "kv.aof")
    common = ["--port", "0", "--appendonly", aof, "--appendfsync", "always"]
    with subprocess.Popen(
        [sys.executable, "-m", "railcar", "serve", "kv", "--protocol", "kvbin", "--engine", "epoll", *common],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            port = int(proc.stdout.readline().rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(kvbin.encode_request(kvbin.SET, b"greeting", b"from kvbin"))
                assert sock.recv(16) == kvbin.OK_REPLY
        finally:
            proc.terminate()
            proc.communicate(timeout=10)
    with subprocess.Popen(
        [sys.executable, "-m", "railcar", "serve", "kv", *common], stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            port = int(proc.stdout.readline().rsplit(":", 1)[1])
            assert cli_session(port, "GET greeting\n") == "from kvbin\n"
        finally:
            proc.terminate()
            proc.communicate(timeout=10)
