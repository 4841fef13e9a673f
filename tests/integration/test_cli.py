"""The ``railcar`` command as a user runs it: serve, signals, bad input, bench smoke runs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import click
import pytest

from railcar import ENGINES
from railcar.engine import available_datagram_engines, available_engines, unavailable
from railcar.reqrep.sync import SyncClient
from tests.helpers import engine_param, recv_exactly

ENGINE_PARAMS = [engine_param(name) for name in ENGINES]

RAILCAR = [sys.executable, "-m", "railcar"]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RAILCAR, *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def served(request: pytest.FixtureRequest) -> Iterator[tuple[subprocess.Popen[str], int]]:
    engine = request.param
    with subprocess.Popen(
        [*RAILCAR, "serve", "echo", "--engine", engine, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()
            assert first.startswith("listening on 127.0.0.1:"), first
            yield proc, int(first.rsplit(":", 1)[1])
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)


@pytest.mark.parametrize("served", ENGINE_PARAMS, indirect=True)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_echo_prints_port_echoes_and_stops_on_signal(
    served: tuple[subprocess.Popen[str], int], sig: signal.Signals
) -> None:
    proc, port = served
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"hello railcar")
        assert recv_exactly(sock, 13) == b"hello railcar"
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
        assert sock.recv(10) == b""
    _, err = proc.communicate(timeout=5)
    assert "Traceback" not in err


@pytest.mark.parametrize("engine", ENGINE_PARAMS)
@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_aborts_what_is_left_at_once(engine: str, second: signal.Signals) -> None:
    with subprocess.Popen(
        [*RAILCAR, "serve", "echo", "--engine", engine, "--port", "0", "--deadline", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sending = threading.Thread(target=_send_until_closed, args=(sock,), daemon=True)
            sending.start()  # and never read: the echo's output gets stuck
            time.sleep(1)
            assert sending.is_alive()  # blocked: the server has stopped reading
            proc.send_signal(signal.SIGINT)
            time.sleep(0.5)
            if engine != "threads":  # its echo blocks in sendall, which its stop sometimes ends early
                # the first signal waits (up to 60 s) for the stuck echo's queued output
                assert proc.poll() is None, proc.communicate()
            proc.send_signal(second)  # once used to leave the loop thread running forever
            started = time.monotonic()
            try:
                assert proc.wait(timeout=10) == 0
            finally:
                if proc.poll() is None:
                    proc.kill()
            assert time.monotonic() - started < 5
            sending.join(10)  # the server's end is gone: the send fails
        _, err = proc.communicate(timeout=5)
    assert "Traceback" not in err


def _send_until_closed(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while True:
            sock.sendall(bytes(65536))


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("railcar: error: ")
    return lines[0]


@pytest.mark.parametrize("engine", ENGINE_PARAMS)
def test_port_in_use_is_one_line_and_exit_2(engine: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line_error(run("serve", "echo", "--engine", engine, "--port", str(port)))
    assert f"127.0.0.1:{port}" in line
    assert "address already in use" in line


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["serve", "echo", "--engine", "warp"], "'warp' is not one of"),
        (["serve", "echo", "--port", "70000"], "--port"),
        (["serve", "echo", "--port", "-1"], "--port"),
        (["serve", "echo", "--port", "http"], "--port"),
        (["serve", "echo", "--host", "no-such-host.invalid", "--port", "0"], "unknown host"),
        (["serve", "echo", "--bogus"], "No such option"),
        (["serve", "teleport"], "No such command"),
        (["bench", "echo", "--engines", "warp"], "unknown engine 'warp'"),
        (["bench", "kv", "--engines", "warp"], "unknown engine 'warp'"),
        (["bench", "kvmem", "--keys", "10"], "--keys"),
        (["serve", "kv", "--maxmemory", "lots"], "--maxmemory': not a memory size: 'lots'"),
        (["bench", "kvload", "--engines", "warp"], "unknown engine 'warp'"),
        (["bench", "kvload", "--clients", "10,none"], "--clients"),
        (["bench", "kvload", "--clients", "0"], "--clients"),
        (["serve", "kv", "--protocol", "kvbin", "--requirepass", "x"], "kvbin has no AUTH"),
        (["serve", "kv", "--protocol", "kvbin", "--parser", "python"], "--parser and --executor are RESP's"),
        (["serve", "kv", "--protocol", "kvbin", "--executor", "c"], "--parser and --executor are RESP's"),
        (["bench", "http", "--seconds", "0"], "--seconds"),
        (["serve", "http", "--parser", "picohttp"], "'picohttp' is not one of"),
        (["bench", "echo", "--seconds", "-3"], "--seconds"),
        (["bench", "idle", "--connections", "0"], "--connections"),
        (["serve", "echo", "--deadline", "nan"], "not a finite number"),
        (["serve", "echo", "--unix", "/tmp/" + "x" * 120], "AF_UNIX path too long"),
        (["bench", "echo", "--seconds", "inf"], "not a finite number"),
        (["bench", "reqrep", "--seconds", "nan"], "not a finite number"),
        (["bench", "reqrep", "--warmup", "inf"], "not a finite number"),
        (["bench", "load", "--seconds", "nan"], "not a finite number"),
        (["load", "--port", "7000", "--rate", "nan"], "not a finite number"),
        (["bench", "reqrep", "--md", "/nonexistent-dir/BENCHMARKS.md"], "does not exist"),
        (["serve", "echo", "--udp", "--engine", "threads"], "does not serve datagrams"),
        (["serve", "echo", "--udp", "--unix", "/tmp/railcar-udp"], "not on a Unix socket"),
        (["serve", "echo", "--udp", "--max-datagram", "65528"], "--max-datagram"),
        (["serve", "echo", "--max-datagram", "100"], "only with --udp"),
        (["bench", "udp", "--engines", "threads"], "does not serve datagrams"),
        (["bench", "udp", "--size", "4"], "--size"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args: list[str], needle: str) -> None:
    assert needle in one_line_error(run(*args))


def test_missing_uvloop_is_one_line_and_exit_2() -> None:
    code = (
        "import sys; sys.modules['uvloop'] = None; from railcar.cli import main;"
        "main(['serve', 'echo', '--engine', 'uvloop', '--port', '0'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert "pip install uvloop" in one_line_error(result)


def test_unix_socket_path_is_reported(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "cli.sock")
    with subprocess.Popen(
        [*RAILCAR, "serve", "echo", "--unix", path], stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == f"listening on {path}"
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert "railcar" in result.stdout


def test_bench_echo_smoke_runs_every_engine_and_peer() -> None:
    result = run(
        "bench",
        "echo",
        "--seconds",
        "0.3",
        "--warmup",
        "0.1",
        "--rounds",
        "1",
        "--json",
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["tool"] == "railcar"
    assert doc["machine"]["cpus"] >= 1
    systems = {r["system"]: r for r in doc["results"]}
    expected = {f"railcar-{e}" for e in available_engines()}
    expected |= {"uvloop-protocol", "asyncio-protocol", "asyncio-streams"}
    assert set(systems) == expected
    for result_row in systems.values():
        assert result_row["scenario"] == "echo"
        assert result_row["ops_per_s"] > 0
        assert result_row["errors"] == 0
        assert 0 <= result_row["server_kernel"] <= 1  # a share of CPU ticks: 0.3 s holds few
    assert systems["railcar-uvloop"]["peer"] == "uvloop-protocol"
    assert systems["railcar-uvloop"]["ratio"] > 0


def test_bench_udp_smoke_runs_every_datagram_engine_and_peer(tmp_path: os.PathLike[str]) -> None:
    md = os.path.join(tmp_path, "BENCH.md")
    result = run(
        *("bench", "udp", "--seconds", "0.3", "--warmup", "0.1", "--rounds", "1", "--json", "--md", md),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    systems = {r["system"]: r for r in json.loads(result.stdout)["results"]}
    assert set(systems) == {f"railcar-{e}" for e in available_datagram_engines()} | {
        "uvloop-datagram",
        "asyncio-datagram",
    }
    for row in systems.values():
        assert row["scenario"] == "udp-echo"
        assert row["ops_per_s"] > 0
        assert row["errors"] == 0
    assert systems["railcar-epoll"]["peer"] == "uvloop-datagram"
    with open(md, encoding="utf-8") as written:
        assert "<!-- bench:udp -->" in written.read()


@pytest.mark.parametrize(
    ("engine", "host"),
    [
        ("epoll", "127.0.0.1"),
        ("uvloop", "::1"),
        ("asyncio", "127.0.0.1"),
        ("epoll", "::1"),
        pytest.param(
            "uring",
            "::1",
            marks=pytest.mark.skipif(unavailable("uring") is not None, reason=str(unavailable("uring"))),
        ),
    ],
)
def test_serve_echo_udp_echoes_datagrams_and_stops_on_signal(engine: str, host: str) -> None:
    family = socket.AF_INET6 if host == "::1" else socket.AF_INET
    with subprocess.Popen(
        [*RAILCAR, "serve", "echo", "--udp", "--engine", engine, "--host", host, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().rsplit(":", 1)[1])
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.sendto(b"hello udp", (host, port))
            assert sock.recv(100) == b"hello udp"
        proc.send_signal(signal.SIGINT if engine == "uvloop" else signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert "Traceback" not in proc.communicate(timeout=5)[1]


def test_bench_idle_smoke_writes_markdown(tmp_path: os.PathLike[str]) -> None:
    md = os.path.join(tmp_path, "BENCH.md")
    result = run(
        "bench",
        "idle",
        "--connections",
        "200",
        "--settle",
        "0.1",
        "--engines",
        "epoll",
        "--no-peers",
        "--md",
        md,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    with open(md, encoding="utf-8") as written:
        text = written.read()
    assert "<!-- bench:idle -->" in text
    assert "railcar-epoll" in text


def test_serve_reqrep_answers_and_stops() -> None:
    with subprocess.Popen(
        [*RAILCAR, "serve", "reqrep", "--codec", "int32", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("listening on 127.0.0.1:"), first
        port = int(first.rsplit(":", 1)[1])
        with SyncClient(port=port) as client:
            assert client.call_many([1, 2, 3]) == [2, 3, 4]
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_serve_reqrep_idle_timeout_closes_a_silent_connection() -> None:
    with subprocess.Popen(
        [*RAILCAR, "serve", "reqrep", "--idle-timeout", "0.3", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as silent:
            assert silent.recv(1) == b""  # closed by the server, not by the 10 s timeout
        proc.terminate()
        assert proc.wait(timeout=10) == 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["serve", "reqrep", "--codec", "xml"], "'xml' is not one of"),
        (["serve", "reqrep", "--codec", "jsonl", "--mode", "array", "--port", "0"], "fixed-size codec"),
        (["serve", "reqrep", "--max-frame", "10"], "--max-frame"),
        (["serve", "reqrep", "--idle-timeout", "-1"], "--idle-timeout"),
        (["serve", "reqrep", "--frame-timeout", "nan"], "not a finite number"),
        (["bench", "reqrep", "--scenario", "teleport"], "'teleport' is not one of"),
    ],
)
def test_reqrep_bad_arguments_are_one_line(args: list[str], needle: str) -> None:
    assert needle in one_line_error(run(*args))


def test_bench_reqrep_smoke_runs_every_scenario_and_peer() -> None:
    result = run(
        "bench", "reqrep", "--seconds", "0.3", "--warmup", "0.1", "--rounds", "1", "--json", timeout=300
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    rows = {(r["scenario"], r["system"]): r for r in doc["results"]}
    assert {scenario for scenario, _ in rows} == {"int32", "int32-vec", "struct276", "jsonl", "call", "sync"}
    assert {"raw-item", "raw-numpy", "pyzmq-1", "pyzmq-1000", "grpc-aio"} <= {s for _, s in rows}
    for row in rows.values():
        assert row["ops_per_s"] > 0, row
        assert row["errors"] == 0, row
    assert set(rows[("int32", "railcar")]["ratios"]) == {"raw-item", "pyzmq-1"}


def test_bench_load_smoke_runs_every_scenario_and_peer() -> None:
    result = run("bench", "load", "--seconds", "1", "--rounds", "1", "--warmup", "0.3", "--json", timeout=300)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["warmup"] == 0.3
    rows = {(r["scenario"], r["system"]): r for r in doc["results"]}
    assert set(rows) == {
        ("resp-p1", "railcar-load"),
        ("resp-p1", "redis-benchmark -P 1"),
        ("resp-p16", "railcar-load"),
        ("resp-p16", "redis-benchmark -P 16"),
        ("http", "railcar-load"),
        ("http", "wrk -c 100"),
        ("users8000", "railcar-load"),
    }
    for row in rows.values():
        assert row["ops_per_s"] > 0, row
        assert row["errors"] == 0, row
    assert rows[("http", "railcar-load")]["ratio"] > 0
    assert 0 < rows[("users8000", "railcar-load")]["generator_rss_bytes"] < 2**30


def test_bench_kv_smoke_measures_every_test_beside_redis_server(tmp_path: os.PathLike[str]) -> None:
    md = os.path.join(tmp_path, "BENCH.md")
    result = run("bench", "kv", "--requests", "2000", "--rounds", "1", "--json", "--md", md, timeout=300)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    rows = {(r["pipeline"], r["test"], r["system"]): r for r in doc["results"]}
    tests = ("set", "get", "incr", "lpush", "lpop")
    assert set(rows) == {(p, t, s) for p in (1, 32) for t in tests for s in ("railcar-epoll", "redis-server")}
    for (pipeline, _, system), row in rows.items():
        assert row["ops_per_s"] > 0, row
        if system == "railcar-epoll":
            assert row["ratio"] > 0
            assert row["target"] == (0.7 if pipeline == 1 else 0.5)
    with open(md) as written:
        assert "<!-- bench:kv -->" in written.read()


def test_bench_kvload_smoke_measures_every_engine_at_every_client_count(tmp_path: os.PathLike[str]) -> None:
    md = os.path.join(tmp_path, "BENCH.md")
    result = run(
        "bench", "kvload", "--clients", "20,40", "--seconds", "0.5", "--warmup", "0", "--rounds", "1",
        "--json", "--md", md, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    rows = {(r["clients"], r["engine"]): r for r in doc["results"]}
    assert set(rows) == {(c, e) for c in (20, 40) for e in ("epoll", "uvloop", "threads")}
    for (_, engine), row in rows.items():
        assert row["ops_per_s"] > 0, row
        assert row["errors"] == 0, row
        assert ("vs_threads" in row) == (engine != "threads")
    with open(md) as written:
        assert "<!-- bench:kvload -->" in written.read()


def test_bench_kvmem_smoke_loads_every_key_into_both_servers(tmp_path: os.PathLike[str]) -> None:
    md = os.path.join(tmp_path, "BENCH.md")
    result = run("bench", "kvmem", "--keys", "20000", "--json", "--md", md, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = {r["system"]: r for r in json.loads(result.stdout)["results"]}
    assert set(rows) == {"railcar-epoll", "redis-server"}
    assert rows["redis-server"]["used_memory"] > 20000 * 16
    assert rows["railcar-epoll"]["rss_growth"] > 20000 * 16  # every key is held, none dropped
    assert rows["railcar-epoll"]["ratio"] > 0
    with open(md) as written:
        assert "<!-- bench:kvmem -->" in written.read()


def test_bench_http_smoke_measures_railcar_beside_socketify_and_granian(tmp_path: os.PathLike[str]) -> None:
    md = os.path.join(tmp_path, "BENCH.md")
    result = run("bench", "http", "--seconds", "1", "--rounds", "1", "--json", "--md", md, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = {(r["load"], r["system"]): r for r in json.loads(result.stdout)["results"]}
    loads = ("h2load -c100 -m16", "wrk -t1 -c100")
    systems = ("railcar-uvloop", "railcar-uvloop/httptools", "socketify", "granian")
    assert set(rows) == {(load, system) for load in loads for system in systems}
    for (load, system), row in rows.items():
        assert row["ops_per_s"] > 0, row
        assert row["errors"] == 0, row
        assert row["server_cpu_us_per_request"] > 0, row
        if system.startswith("railcar-"):
            assert set(row["ratio"]) == {"socketify", "granian"}
            assert ("target" in row) == (load.startswith("h2load") and system == "railcar-uvloop")
    with open(md) as written:
        assert "<!-- bench:http -->" in written.read()


def test_stress_steps_report_each_step(tmp_path: os.PathLike[str]) -> None:
    with subprocess.Popen(
        [*RAILCAR, "serve", "echo", "--engine", "epoll", "--port", "0"], stdout=subprocess.PIPE, text=True
    ) as server:
        assert server.stdout is not None
        port = server.stdout.readline().strip().rpartition(":")[2]
        result = run(
            "stress", "--port", port, "--steps", "50,200", "--step-duration", "0.5s",
            "--server-pid", str(server.pid), "--json",
        )  # fmt: skip
        server.terminate()
    assert result.returncode == 0, result.stderr
    steps = json.loads(result.stdout)["results"]
    assert [s["scenario"] for s in steps] == ["users=50", "users=200"]
    for step in steps:
        assert step["connected"] == step["users"]
        assert step["failures"] == 0
        assert step["received"] > 0
        assert step["server_rss_bytes"] > 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["stress", "--port", "7000", "--steps", "10,x"], "comma-separated"),
        (["stress", "--port", "7000", "--server-pid", "999999999"], "no process with pid"),
        (["bench", "load", "--scenario", "gopher"], "'gopher' is not one of"),
    ],
)
def test_stress_and_bench_load_bad_arguments_are_one_line(args: list[str], needle: str) -> None:
    assert needle in one_line_error(run(*args))


def _options(command: click.Command, path: str) -> Iterator[tuple[str, click.Option]]:
    """Every option of ``command`` and of every command under it, with the command line that reaches it."""
    for param in command.params:
        if isinstance(param, click.Option):
            yield path, param
    if isinstance(command, click.Group):
        with click.Context(command) as ctx:
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None
                yield from _options(sub, f"{path} {name}")


def test_every_option_of_every_command_has_help() -> None:
    from railcar.cli.commands import cli  # noqa: PLC0415

    options = list(_options(cli, "railcar"))
    assert len(options) > 50  # the walk reached the lazily imported commands
    assert [(path, option.opts) for path, option in options if not option.help] == []


def test_the_cli_imports_a_command_only_to_run_it() -> None:
    # Importing every command's modules took 0.2 s in which a Ctrl-C printed a traceback.
    code = (
        "import sys, railcar.cli.commands;"
        "print(sorted(m for m in sys.modules if m.startswith(('railcar.load', 'railcar.bench'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert done.stdout == "[]\n"


def test_the_entry_point_imports_nothing_before_it_can_handle_a_ctrl_c() -> None:
    code = (
        "import sys, railcar.cli; print(sorted(m for m in sys.modules if m.startswith(('railcar', 'click'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout == "['railcar', 'railcar.cli']\n"


def test_a_ctrl_c_while_the_cli_imports_exits_quietly_with_status_130() -> None:
    # The Ctrl-C lands in the middle of the commands' imports, where a real one usually does.
    code = """
import sys
from railcar.cli import main

class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == "click":
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, CtrlC())
main(["load", "--port", "1"])
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert (done.returncode, done.stdout, done.stderr) == (130, "", "railcar: interrupted\n")


def test_the_library_prints_nothing_unless_the_application_configures_logging() -> None:
    # Without a handler on the "railcar" logger, Python's last-resort handler prints warnings on stderr.
    code = """
import socket
import railcar

class Failing(railcar.Handler):
    def on_data(self, conn, data):
        raise RuntimeError("handler bug")

with railcar.create_server(Failing(), "epoll", port=0) as server:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"x")
        assert sock.recv(1) == b""  # the failing connection was closed, and the failure logged
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


@pytest.mark.parametrize(("options", "logged"), [([], True), (["--log-level", "error"], False)])
def test_the_cli_logs_warnings_on_one_line_unless_told_otherwise(options: list[str], logged: bool) -> None:
    with subprocess.Popen(
        [*RAILCAR, *options, "serve", "reqrep", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"\xff" * 64)  # a frame length no server accepts
            assert b"protocol error" in sock.recv(4096)
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    warning = "railcar: WARNING railcar.reqrep: protocol error from ('127.0.0.1', "
    if logged:
        assert err.startswith(warning), err
        assert len(err.splitlines()) == 1, err
    else:
        assert err == ""
