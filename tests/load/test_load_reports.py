"""What ``railcar load`` reports and how it exits: null latencies, failure budget, output files, rates."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from railcar.load.plan import Plan
from railcar.load.runner import LoadResult, Sample
from railcar.load.target import is_local
from railcar.load.workloads import Workload
from tests.load.servers import closing_echo, lying_echo, serving
from tests.load.test_load_cli import RAILCAR, railcar

Behaviour = Callable[[socket.socket], None]


def recording(behaviour: Behaviour) -> tuple[Behaviour, list[int]]:
    """``behaviour``, counting the connections it serves."""
    connections: list[int] = []

    def serve(conn: socket.socket) -> None:
        connections.append(1)
        behaviour(conn)

    return serve, connections


def echo(conn: socket.socket) -> None:
    while data := conn.recv(65536):
        conn.sendall(data)


def test_nothing_answered_has_no_latency_and_never_passes() -> None:
    with serving(lying_echo) as port:
        text = railcar("load", "--port", str(port), "--duration", "0.5s", "--max-failures", "100%")
        as_json = railcar("load", "--port", str(port), "--duration", "0.5s", "--json")
    assert text.returncode == 3
    assert "Latency:    min n/a  avg n/a  p50 n/a" in text.stdout
    assert text.stderr == "railcar: load failed: no request was answered\n"
    assert as_json.returncode == 3
    result = json.loads(as_json.stdout)["results"][0]
    assert result["received"] == 0
    assert set(result["latency_us"].values()) == {None}
    assert all(sample["p50_us"] is None and sample["p99_us"] is None for sample in result["series"])


def test_the_failure_budget_sets_the_exit_status() -> None:
    with serving(closing_echo(5)) as port:
        strict = railcar("load", "--port", str(port), "--duration", "0.5s", "--json")
        by_share = railcar("load", "--port", str(port), "--duration", "0.5s", "--max-failures", "100%")
        by_count = railcar("load", "--port", str(port), "--duration", "0.5s", "--max-failures", "1000000")
    assert strict.returncode == 3
    errors = json.loads(strict.stdout)["results"][0]["errors"]
    assert errors > 0
    assert strict.stderr == f"railcar: load failed: {errors:,} failures exceed --max-failures 0\n"
    assert by_share.returncode == 0, by_share.stderr
    assert by_count.returncode == 0, by_count.stderr


@pytest.mark.parametrize("option", ["--out", "--plot"])
def test_an_output_file_that_cannot_be_written_is_refused_before_the_load(option: str) -> None:
    serve, connections = recording(echo)
    with serving(serve) as port:
        done = railcar("load", "--port", str(port), option, "/nonexistent/run.out")
    assert done.returncode == 2
    assert done.stderr == (
        f"railcar: error: Invalid value for '{option}': directory '/nonexistent' does not exist.\n"
    )
    assert connections == []


def test_plot_without_matplotlib_is_refused_before_the_load(tmp_path: Path) -> None:
    serve, connections = recording(echo)
    code = "import sys; sys.modules['matplotlib'] = None; from railcar.cli import main; main(sys.argv[1:])"
    with serving(serve) as port:
        done = subprocess.run(
            [sys.executable, "-c", code, "load", "--port", str(port), "--plot", str(tmp_path / "run.png")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2
    assert done.stderr == "railcar: error: --plot needs matplotlib: pip install 'railcar[plot]'\n"
    assert connections == []


def test_a_file_that_cannot_be_written_after_the_load_still_gets_the_report(tmp_path: Path) -> None:
    folder = tmp_path / "reports"
    folder.mkdir()

    def remove_the_folder_then_echo(conn: socket.socket) -> None:
        shutil.rmtree(folder, ignore_errors=True)  # the paths were checked before this first connection
        echo(conn)

    out, png = folder / "run.json", folder / "run.png"
    with serving(remove_the_folder_then_echo) as port:
        done = railcar(
            "load", "--port", str(port), "--duration", "0.5s", "--out", str(out), "--plot", str(png)
        )
    assert done.returncode == 2
    assert "=== load test complete ===" in done.stdout
    assert done.stderr == (
        f"railcar: error: cannot write {out}: No such file or directory; "
        f"cannot write {png}: No such file or directory (the report is on stdout)\n"
    )


def test_a_window_too_short_to_measure_reports_the_counts_and_no_rate() -> None:
    with serving(echo) as port:
        as_json = railcar("load", "--port", str(port), "--duration", "0.2s", "--json")
        text = railcar("load", "--port", str(port), "--duration", "0.2s")
    assert as_json.returncode == 0, as_json.stderr
    result = json.loads(as_json.stdout)["results"][0]
    assert result["received"] > 0
    assert result["ops_per_s"] is None
    assert text.returncode == 0, text.stderr
    assert "Throughput: n/a (loaded 0.2" in text.stdout
    assert "a rate needs at least 0.5 s)" in text.stdout
    with serving(echo) as port:
        just_enough = railcar("load", "--port", str(port), "--duration", "0.5s", "--json")
    assert json.loads(just_enough.stdout)["results"][0]["ops_per_s"] > 0


def test_by_default_a_local_server_keeps_a_cpu() -> None:
    with serving(echo) as port:
        done = railcar("load", "--port", str(port), "--users", "64", "--duration", "0.5s", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["results"][0]["procs"] == max(1, len(os.sched_getaffinity(0)) - 1)


def test_local_addresses_are_told_apart_from_remote_ones() -> None:
    assert is_local("127.0.0.1")
    assert is_local("localhost")
    assert is_local("::1") == socket.has_ipv6
    assert not is_local("192.0.2.1")  # TEST-NET-1: never an address of this machine
    assert not is_local("no-such-host.invalid")


def test_the_failures_line_says_connect_errors_are_not_in_its_count(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def accept_three_then_stop() -> None:
            conns = [listener.accept()[0] for _ in range(3)]  # the target check and the two users
            listener.close()  # every reconnect is refused
            for conn in conns:
                with conn:
                    for _ in range(5):
                        conn.sendall(conn.recv(65536))

        threading.Thread(target=accept_three_then_stop, daemon=True).start()
        out = tmp_path / "run.json"
        done = railcar(
            "load", "--port", str(port), "--users", "2", "--procs", "1", "--duration", "1s",
            "--out", str(out), "--max-failures", "100%",
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())["results"][0]
    kinds = result["failure_kinds"]
    assert kinds["connect"] > 0
    assert result["failures"] == kinds["reset"] > 0
    assert (
        f"Failures:   {kinds['reset']:,} requests (reset {kinds['reset']:,}); "
        f"also {kinds['connect']:,} failed connects (not requests, not in that count)\n"
    ) in done.stdout
    assert "over 1 process," in done.stdout


def test_stress_interrupted_while_a_step_starts_prints_the_steps_it_finished() -> None:
    first_step_over = threading.Event()
    with socket.create_server(("127.0.0.1", 0), backlog=1) as listener:
        port = listener.getsockname()[1]

        def serve_the_first_step_only() -> None:
            listener.accept()[0].close()  # the target check
            with listener.accept()[0] as conn:  # step 1's one user
                echo(conn)
            first_step_over.set()  # and accept no more: step 2's connects wait in a full backlog

        threading.Thread(target=serve_the_first_step_only, daemon=True).start()
        with subprocess.Popen(
            [
                *RAILCAR, "stress", "--port", str(port), "--steps", "1,8", "--step-duration", "0.5s",
                "--procs", "1", "--connect-timeout", "30s", "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        ) as proc:  # fmt: skip
            assert first_step_over.wait(30)
            threading.Event().wait(1.0)  # step 2 has started its worker, whose connects hang
            os.killpg(proc.pid, signal.SIGINT)
            out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert [step["scenario"] for step in json.loads(out)["results"]] == ["users=1"]
    assert "Traceback" not in err


def test_the_plot_axes_start_at_zero() -> None:
    import matplotlib.pyplot as plt  # noqa: PLC0415 - optional dependency

    from railcar.load.plot import draw  # noqa: PLC0415

    result = LoadResult(Plan("127.0.0.1", 7000, Workload("echo"), users=1), procs=1)
    result.series = [Sample(0.25 * i, 0.25, 25_000 + i, 900.0 + i, 1900.0 + i) for i in range(8)]
    for latency_ns in range(900_000, 2_000_000, 1000):
        result.histogram.record_value(latency_ns)
    figure = draw(result)
    try:
        axes = figure.get_axes()
        assert len(axes) == 3  # latency by percentile; replies/s and its twin latency axis over time
        assert [axis.get_ylim()[0] for axis in axes] == [0, 0, 0]
    finally:
        plt.close(figure)
