"""``railcar load`` end to end: real servers, slow and lying servers, bad input, Ctrl-C."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from railcar.apps.echo import EchoHandler
from railcar.bench.external import nginx_server, redis_server
from railcar.engine import create_server
from railcar.load.worker import MAX_IN_FLIGHT_BATCHES
from tests.load.servers import (
    closing_echo,
    delayed_echo,
    lying_echo,
    never_reads,
    serving,
    silent_after,
    stalling_echo,
)

RAILCAR = [sys.executable, "-m", "railcar"]


def railcar(*args: str, timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RAILCAR, *args], capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )


def load(port: int, *args: str, status: int = 0) -> dict[str, Any]:
    """Run ``railcar load --json`` (1 s unless told) and return its one result; check the counts reconcile.

    ``status`` is the exit status expected: 0 for a run within its failure budget, 3 for one over it.
    """
    done = railcar("load", "--port", str(port), "--json", "--duration", "1s", *args)
    assert done.returncode == status, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)["results"][0]
    assert result["sent"] == result["received"] + result["failures"]
    assert result["failures"] == sum(n for kind, n in result["failure_kinds"].items() if kind != "connect")
    assert result["errors"] == result["failures"] + result["failure_kinds"]["connect"]
    # every good reply is in exactly one bin of the time series
    assert sum(sample["replies"] for sample in result["series"]) == result["received"]
    return result


@pytest.fixture(scope="module")
def echo_port() -> Iterator[int]:
    server = create_server(EchoHandler(), "uvloop", host="127.0.0.1", port=0)
    server.start()
    yield server.port
    server.stop(2.0)


def test_echo_counts_and_percentiles(echo_port: int) -> None:
    result = load(echo_port, "--users", "20", "--duration", "1s", "--procs", "2")
    assert result["failures"] == 0
    assert result["received"] > 1000
    assert result["connected"] == 20
    latency = result["latency_us"]
    assert 0 < latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    # per second of load: the drain of the last replies (in elapsed_s) is not load time
    assert result["ops_per_s"] == pytest.approx(result["received"] / result["loaded_s"], rel=0.01)
    series = result["series"]
    # two workers' ticks merged into one bin per 0.25 s, none lost or counted twice (load() checks the sum)
    assert [sample["t"] for sample in series] == [0.25 * i for i in range(len(series))]
    assert all(sample["seconds"] == 0.25 for sample in series[:-1])
    for sample in series:
        assert sample["ops_per_s"] == pytest.approx(sample["replies"] / sample["seconds"], rel=0.01, abs=0.1)


def test_p50_matches_an_injected_delay() -> None:
    # 5 ms: this VM adds a steady 0.15-0.25 ms (two thread wake-ups, sleep overshoot) to any
    # delay, which is 10% of 2 ms but leaves 5 ms well inside the tolerance.
    delay = 0.005
    with serving(delayed_echo(delay)) as port:
        result = load(port, "--users", "2", "--duration", "2s", "--procs", "1")
    assert result["failures"] == 0
    assert delay * 1e6 <= result["latency_us"]["p50"] <= delay * 1e6 * 1.10


def test_pipelined_echo_with_a_literal_message(echo_port: int) -> None:
    result = load(echo_port, "--users", "4", "--duration", "1s", "--pipeline", "8", "--message", "hello")
    assert result["failures"] == 0
    assert result["received"] % 8 == 0


def test_a_server_that_closes_connections_is_counted_not_fatal() -> None:
    with serving(closing_echo(5)) as port:
        result = load(port, "--users", "4", "--duration", "1s", "--procs", "1", "--max-failures", "100%")
    assert result["failure_kinds"]["reset"] > 0
    assert result["received"] > 0


def test_a_server_that_lies_is_counted_as_mismatches() -> None:
    with serving(lying_echo) as port:
        result = load(port, "--users", "2", "--duration", "1s", "--procs", "1", status=3)
    assert result["received"] == 0
    assert result["failure_kinds"]["mismatch"] > 0


def test_a_server_that_does_not_answer_times_out() -> None:
    with serving(delayed_echo(5.0)) as port:
        result = load(
            port, "--users", "2", "--duration", "1.5s", "--timeout", "300ms", "--procs", "1", status=3
        )
    assert result["received"] == 0
    assert result["failure_kinds"]["timeout"] >= 2


def test_throughput_counts_the_loaded_time_not_the_wait_for_the_last_replies() -> None:
    with serving(silent_after(50)) as port:
        result = load(port, "--users", "1", "--procs", "1", "--max-failures", "1")
    assert result["received"] == 50
    assert result["elapsed_s"] > 2  # waited for the reply that never came
    assert 0.9 < result["loaded_s"] < 1.5
    assert result["ops_per_s"] == pytest.approx(50 / result["loaded_s"], rel=0.01)


def test_stress_reports_the_steps_it_finished_when_a_later_one_fails() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def accept_three_then_stop() -> None:
            conns = [listener.accept()[0] for _ in range(3)]  # the target check and step 1's users
            listener.close()  # step 2 finds nobody listening
            for conn in conns:
                with conn, contextlib.suppress(OSError):  # users may end with a reset
                    while data := conn.recv(65536):
                        conn.sendall(data)

        server = threading.Thread(target=accept_three_then_stop, daemon=True)
        server.start()
        done = railcar(
            "stress",
            "--port",
            str(port),
            "--steps",
            "2,4",
            "--step-duration",
            "1s",
            "--procs",
            "1",
            "--json",
        )
    assert done.returncode == 2
    assert [step["scenario"] for step in json.loads(done.stdout)["results"]] == ["users=2"]
    assert done.stderr.startswith("railcar: error: step users=4:"), done.stderr


def stress(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return railcar(
        "stress", "--port", str(port), "--step-duration", "0.5s", "--procs", "1", "--json", *args
    )  # fmt: skip


def test_stress_fails_a_step_over_its_budget_or_unanswered_as_load_fails_a_run() -> None:
    with serving(lying_echo) as port:
        done = stress(port, "--steps", "1,2", "--max-failures", "100%")
    assert done.returncode == 3, done.stderr
    assert [step["received"] for step in json.loads(done.stdout)["results"]] == [0, 0]
    assert done.stderr.splitlines() == [
        "railcar: stress failed: step users=1: no request was answered; step users=2: no request was answered"
    ]
    with serving(closing_echo(5)) as port:
        over = stress(port, "--steps", "2")
        within = stress(port, "--steps", "2", "--max-failures", "100%")
    assert over.returncode == 3
    assert over.stderr.startswith("railcar: stress failed: step users=2: "), over.stderr
    assert "exceed --max-failures 0" in over.stderr
    assert within.returncode == 0, within.stderr


def test_open_loop_holds_its_schedule_while_the_server_does_not_read() -> None:
    with serving(never_reads) as port:
        result = load(
            port,
            *("--users", "5", "--rate", "1000", "--message", "100000", "--duration", "2s", "--procs", "1"),
            status=3,
        )
    assert result["received"] == 0
    # 10,000 messages of 100 kB fell due; without pausing they queued in the generator (405 MiB).
    assert result["generator_rss_bytes"] < 120 * 2**20  # 59 MiB measured


def test_open_loop_sees_the_stall_that_closed_loop_hides() -> None:
    with serving(stalling_echo(stall_at=0.5, stall=0.5)) as port:
        closed = load(port, "--users", "1", "--duration", "2s", "--procs", "1", "--interval", "1ms")
    with serving(stalling_echo(stall_at=0.5, stall=0.5)) as port:
        opened = load(port, "--users", "1", "--duration", "2s", "--procs", "1", "--rate", "500")
    # Closed loop: one request waited 0.5 s, the rest were fast, so p90 hides the stall.
    assert closed["latency_us"]["max"] > 400_000
    assert closed["latency_us"]["p90"] < 50_000
    # Open loop: every request due during the stall waited for it (about a quarter of the run).
    assert opened["latency_us"]["p90"] > 100_000
    assert opened["sent"] == pytest.approx(1000, rel=0.1)


def test_open_loop_in_flight_is_bounded() -> None:
    with serving(delayed_echo(5.0)) as port:
        result = load(port, "--users", "1", "--procs", "1", "--rate", "5000", "--timeout", "10s", status=3)
    assert result["sent"] == MAX_IN_FLIGHT_BATCHES
    assert result["failure_kinds"]["unanswered"] == MAX_IN_FLIGHT_BATCHES


def test_reqrep_against_the_railcar_server() -> None:
    from railcar.apps.increment import increment_service  # noqa: PLC0415
    from railcar.reqrep import create_reqrep_server  # noqa: PLC0415

    server = create_reqrep_server(increment_service("int32", "item"), "int32", host="127.0.0.1", port=0)
    server.start()
    try:
        result = load(
            server.port, "--protocol", "reqrep", "--users", "4", "--pipeline", "100", "--duration", "1s"
        )
    finally:
        server.stop(2.0)
    assert result["failures"] == 0
    assert result["received"] > 10_000


@pytest.mark.parametrize("pipeline", ["1", "16"])
def test_resp_ping_against_redis_server(pipeline: str) -> None:
    with redis_server() as (port, _):
        result = load(port, "--protocol", "resp", "--users", "10", "--pipeline", pipeline, "--duration", "1s")
    assert result["failures"] == 0
    assert result["received"] > 1000


def test_http_against_nginx() -> None:
    with nginx_server() as (port, _):
        result = load(port, "--protocol", "http", "--users", "10", "--duration", "1s", "--pipeline", "4")
    assert result["failures"] == 0
    assert result["received"] > 1000


def test_http_errors_are_failures() -> None:
    with nginx_server() as (port, _):
        result = load(
            port, "--protocol", "http", "--path", "/error", "--users", "2", "--duration", "0.5s", status=3
        )
    assert result["received"] == 0
    assert result["failure_kinds"]["status"] == result["sent"] > 0


def test_plot_and_out_files(echo_port: int, tmp_path: Path) -> None:
    png, out = tmp_path / "run.png", tmp_path / "run.json"
    done = railcar(
        "load", "--port", str(echo_port), "--duration", "1s", "--plot", str(png), "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    assert "Throughput:" in done.stdout
    assert png.read_bytes().startswith(b"\x89PNG")
    assert json.loads(out.read_text())["results"][0]["received"] > 0


def test_ctrl_c_prints_the_partial_report(echo_port: int) -> None:
    with subprocess.Popen(
        [*RAILCAR, "load", "--port", str(echo_port), "--duration", "60s", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        time.sleep(3)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    result = json.loads(out)["results"][0]
    assert result["interrupted"] is True
    assert result["received"] > 0
    assert result["elapsed_s"] < 30
    assert result["sent"] == result["received"] + result["failures"]


def _lower_file_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "1"], "cannot connect to 127.0.0.1:1"),
        (["--host", "no-such-host.invalid", "--port", "80"], "cannot resolve host"),
        (["--port", "7000", "--duration", "10x"], "is not a duration"),
        (["--port", "7000", "--protocol", "smtp"], "'smtp' is not one of"),
        (["--port", "7000", "--users", "0"], "--users"),
        (["--port", "7000", "--rate", "100", "--interval", "10ms"], "pick one"),
        (["--port", "7000", "--message", ""], "at least 1 byte"),
        (["--port", "7000", "--message", "0"], "at least 1 byte"),
        (["--port", "7000", "--max-failures", "5x"], "is not a failure count"),
        (["--port", "7000", "--max-failures", "101%"], "more than 100%"),
        (["--port", "7000", "--max-failures", "1.5"], "whole number"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    done = railcar("load", *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_too_many_users_for_the_file_limit(echo_port: int) -> None:
    done = railcar(
        "load", "--port", str(echo_port), "--users", "2000", "--procs", "1", preexec_fn=_lower_file_limit
    )
    assert done.returncode == 2
    assert "open files" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
