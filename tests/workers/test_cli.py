"""``railcar serve --workers``: bad combinations, a graceful SIGTERM, workers that keep dying."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

import railcar.cli.serving
from railcar.cli.commands import run
from railcar.errors import WorkersFailed
from railcar.procs import Command, child_pids
from tests.helpers import connect, recv_exactly, recv_until_eof

DEADLINE = 1.0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "echo", "--workers", "2", "--unix", "/tmp/railcar-x.sock"], "cannot share a Unix socket"),
        (
            ["serve", "echo", "--workers", "2", "--balance", "least-connections"],
            "--balance needs --architecture reactor: under sharding the kernel balances",
        ),
        (
            ["serve", "echo", "--workers", "2", "--architecture", "sharding", "--balance", "round-robin"],
            "--balance needs --architecture reactor",
        ),
        (
            ["serve", "echo", "--architecture", "reactor"],
            "--architecture reactor and --balance need --workers 2 or more",
        ),
        (
            ["serve", "echo", "--balance", "least-connections"],
            "--architecture reactor and --balance need --workers 2 or more",
        ),
        (["serve", "echo", "--unix", ""], "--unix needs a socket path"),
        (["serve", "echo", "--unix", "/tmp/railcar-x.sock", "--port", "7000"], "drop --host and --port"),
        (["serve", "reqrep", "--unix", "/tmp/railcar-x.sock", "--host", "0.0.0.0"], "drop --host and --port"),
        (["serve", "http", "--workers", "0"], "0 is not in the range"),
        (["serve", "reqrep", "--architecture", "prefork"], "'prefork' is not one of"),
        (["serve", "kv", "--workers", "2"], "--workers must be 1"),
        (
            ["serve", "echo", "--udp", "--workers", "2", "--architecture", "reactor"],
            "datagrams have no accept for a reactor to balance",
        ),
    ],
)
def test_bad_combinations_print_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        run(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert message in err


@pytest.mark.parametrize(
    "argv",
    [
        ["--workers", "2", "--architecture", "reactor", "--balance", "round-robin"],
        ["--workers", "1", "--architecture", "sharding"],  # what one worker does anyway
        ["--unix", "/tmp/railcar-x.sock", "--workers", "2", "--architecture", "reactor"],
    ],
)
def test_options_that_take_effect_are_accepted(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[dict[str, Any]] = []
    monkeypatch.setattr(railcar.cli.serving, "serve", lambda *args, **kwargs: served.append(kwargs))
    with pytest.raises(SystemExit) as exit_:
        run(["serve", "echo", *argv])
    assert exit_.value.code == 0
    assert len(served) == 1


def test_workers_that_keep_dying_exit_1(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    def failing(*args: Any, **kwargs: Any) -> None:
        raise WorkersFailed("workers died 6 times in a row")

    monkeypatch.setattr(railcar.cli.serving, "serve", failing)
    with pytest.raises(SystemExit) as exit_:
        run(["serve", "echo", "--workers", "2", "--port", "0"])
    assert exit_.value.code == 1
    assert capsys.readouterr().err == "railcar: error: workers died 6 times in a row\n"


@pytest.mark.parametrize("architecture", ["sharding", "reactor"])
def test_sigterm_stops_every_worker_within_the_deadline(architecture: str) -> None:
    argv = [sys.executable, "-m", "railcar", "serve", "echo", "--engine", "epoll", "--port", "0"]
    argv += ["--workers", "2", "--architecture", architecture, "--deadline", str(DEADLINE)]
    server = Command(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True).start()
    try:
        line = server.first_line(timeout=20)
        assert line.startswith("listening on 127.0.0.1:"), line
        workers = child_pids(server.pid)
        with connect(int(line.rsplit(":", 1)[1])) as idle:
            idle.sendall(b"still here")
            assert recv_exactly(idle, 10) == b"still here"
            began = time.monotonic()
            server.signal(signal.SIGTERM)
            assert server.proc.wait(timeout=DEADLINE + 5) == 0
            took = time.monotonic() - began
            assert idle.recv(1) == b""  # the idle connection was closed, not left hanging
        assert took < DEADLINE + 2.5
        for pid in workers:
            assert not _alive(pid)
    finally:
        server.stop()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_bench_workers_smoke_measures_one_worker_and_two() -> None:
    argv = [sys.executable, "-m", "railcar", "bench", "workers", "--engine", "epoll", "--seconds", "1"]
    argv += ["--rounds", "1", "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    rows = {row["system"]: row for row in json.loads(done.stdout)["results"]}
    assert set(rows) == {
        "railcar-epoll 1 worker",
        "railcar-epoll 2 workers sharding",
        "railcar-epoll 2 workers reactor",
    }
    for row in rows.values():
        assert row["ops_per_s"] > 0
        assert row["errors"] == 0


ASGI_APP = """
import os

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["pid"] = os.getpid()
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"%d" % scope["state"]["pid"]})
"""


def test_asgi_app_runs_its_lifespan_in_every_worker(tmp_path: Any) -> None:
    (tmp_path / "lifespan_app.py").write_text(ASGI_APP)
    argv = [sys.executable, "-m", "railcar", "serve", "asgi", "lifespan_app:app", "--app-dir", str(tmp_path)]
    argv += ["--engine", "asyncio", "--port", "0", "--workers", "2", "--architecture", "reactor"]
    server = Command(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True).start()
    try:
        line = server.first_line(timeout=20)
        assert line.startswith("listening on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        answers = set()
        for _ in range(4):  # round-robin: both workers answer, each with its own lifespan state
            with connect(port) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answers.add(recv_until_eof(sock).rpartition(b"\r\n\r\n")[2])
        assert answers == {str(pid).encode() for pid in child_pids(server.pid)}
    finally:
        server.stop()
