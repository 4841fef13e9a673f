"""kill -9 during writes (and a rewrite) with --appendfsync always: every acknowledged SET survives."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from railcar import ENGINES
from railcar.bench.external import tool
from tests.helpers import engine_param


@contextmanager
def kv_process(engine: str, aof: Path, fsync: str = "always") -> Iterator[tuple[subprocess.Popen[str], int]]:
    with subprocess.Popen(
        [
            *(sys.executable, "-m", "railcar", "serve", "kv"),
            *("--engine", engine, "--port", "0", "--appendonly", str(aof), "--appendfsync", fsync),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()
            assert first.startswith("listening on 127.0.0.1:"), first + (
                proc.stderr.read() if proc.stderr else ""
            )
            yield proc, int(first.rsplit(":", 1)[1])
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)


@pytest.mark.parametrize("engine", [engine_param(name) for name in ENGINES])
def test_acknowledged_sets_survive_kill_9(engine: str, tmp_path: Path) -> None:
    aof = tmp_path / "appendonly.aof"
    acknowledged: list[int] = []
    with kv_process(engine, aof) as (proc, port):

        def write() -> None:
            client = redis.Redis(port=port, socket_timeout=5)
            try:
                for index in range(1_000_000):
                    client.set(f"key:{index}", f"value:{index}")
                    acknowledged.append(index)
            except (redis.ConnectionError, redis.TimeoutError):
                return  # the server was killed

        writers = [threading.Thread(target=write)]
        for writer in writers:
            writer.start()
        deadline = time.monotonic() + 10
        while len(acknowledged) < 100 and time.monotonic() < deadline:
            time.sleep(0.01)
        admin = redis.Redis(port=port)
        admin.bgrewriteaof()  # the file is rewritten while the writes go on
        admin.close()
        while len(acknowledged) < 300 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        for writer in writers:
            writer.join(timeout=10)
    assert len(acknowledged) >= 300
    with kv_process(engine, aof) as (_, port):
        client = redis.Redis(port=port)
        keys = [f"key:{index}" for index in acknowledged]
        values = client.mget(keys)
        assert values == [f"value:{index}".encode() for index in acknowledged]
        client.close()
    check = subprocess.run([tool("redis-check-aof"), str(aof)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout


def test_everysec_and_no_policies_keep_what_a_clean_stop_wrote(tmp_path: Path) -> None:
    for fsync in ("everysec", "no"):
        aof = tmp_path / f"{fsync}.aof"
        with kv_process("epoll", aof, fsync) as (proc, port):
            client = redis.Redis(port=port)
            client.set("k", fsync)
            client.rpush("l", "a", "b")
            client.close()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
        with kv_process("epoll", aof, fsync) as (_, port):
            client = redis.Redis(port=port)
            assert client.get("k") == fsync.encode()
            assert client.lrange("l", 0, -1) == [b"a", b"b"]
            client.close()
