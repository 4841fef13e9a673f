"""``railcar nats pub|sub|request|reply`` as a user runs them, against a real nats-server."""

from __future__ import annotations

import json
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.nats.conftest import StartNats
from tests.nats.server import NatsServer

RAILCAR = [sys.executable, "-m", "railcar", "nats"]


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RAILCAR, *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def background() -> Iterator[list[subprocess.Popen[str]]]:
    """Commands started in the background; any still running after the test is killed."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def start(procs: list[subprocess.Popen[str]], *args: str) -> subprocess.Popen[str]:
    """Start a command that announces on stderr when it is subscribed, and wait for that line."""
    proc = subprocess.Popen([*RAILCAR, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(proc)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert line.startswith(("listening on", "answering on", "serving ")), line
    return proc


def test_sub_receives_what_pub_sends_with_headers(
    nats_server: NatsServer, background: list[subprocess.Popen[str]]
) -> None:
    sub = start(background, "sub", "cli.>", "--count", "3", "--server", nats_server.url)
    published = run(
        "pub", "cli.one", "hello", "--count", "3", "--header", "Trace:7", "--server", nats_server.url
    )
    assert published.returncode == 0, published.stderr
    assert "published 3 messages to cli.one" in published.stdout
    out, _ = sub.communicate(timeout=10)
    assert sub.returncode == 0
    assert out.splitlines() == ["[#1] cli.one", "  Trace: 7", "hello"] + [
        line for n in (2, 3) for line in (f"[#{n}] cli.one", "  Trace: 7", "hello")
    ]


def test_queue_subscribers_share_the_messages(
    nats_server: NatsServer, background: list[subprocess.Popen[str]]
) -> None:
    subs = [start(background, "sub", "cli.q", "--queue", "g", "--server", nats_server.url) for _ in range(2)]
    assert run("pub", "cli.q", "m", "--count", "20", "--server", nats_server.url).returncode == 0
    received = 0
    for sub in subs:
        sub.send_signal(signal.SIGINT)
        out, err = sub.communicate(timeout=10)
        assert sub.returncode == 0, err  # Ctrl-C is how sub stops: quietly
        assert "Traceback" not in err
        received += out.count("[#")
    assert received == 20


def test_request_gets_the_replys_answer(
    nats_server: NatsServer, background: list[subprocess.Popen[str]]
) -> None:
    replier = start(background, "reply", "cli.svc", "pong", "--count", "2", "--server", nats_server.url)
    for _ in range(2):
        answered = run("request", "cli.svc", "ping", "--server", nats_server.url)
        assert answered.returncode == 0, answered.stderr
        assert answered.stdout.splitlines()[-1] == "pong"
    out, _ = replier.communicate(timeout=10)
    assert replier.returncode == 0
    assert out.count("ping") == 2


def test_serve_answers_in_a_queue_group_says_who_and_stops_on_sigterm(
    nats_server: NatsServer, background: list[subprocess.Popen[str]]
) -> None:
    url = nats_server.url
    server = start(background, "serve", "cli.serve", "--app", "echo", "--pid-header", "--server", url)
    answered = run("request", "cli.serve", "hello", "--server", nats_server.url)
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout.splitlines()[1:] == [f"  Railcar-Pid: {server.pid}", "hello"]
    found = run("request", "$SRV.PING.railcar", "", "--server", nats_server.url)
    assert json.loads(found.stdout.splitlines()[-1])["metadata"] == {"pid": str(server.pid)}
    server.send_signal(signal.SIGTERM)
    _, err = server.communicate(timeout=10)
    assert server.returncode == 0, err


def test_server_list_takes_commas_and_repeats(nats_server: NatsServer) -> None:
    result = run("pub", "cli.x", "d", "--server", f"nats://127.0.0.1:1,{nats_server.url}")
    assert result.returncode == 0, result.stderr
    result = run("pub", "cli.x", "d", "--server", "nats://127.0.0.1:1", "--server", nats_server.url)
    assert result.returncode == 0, result.stderr


def test_request_with_no_responder_is_one_line_and_exit_2(nats_server: NatsServer) -> None:
    result = run("request", "cli.nobody", "x", "--server", nats_server.url)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["railcar: error: no responders on 'cli.nobody'"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["pub", "a", "b", "--server", "nats://127.0.0.1:1"], "cannot connect to nats://127.0.0.1:1"),
        (["sub", "a", "--server", "nats://127.0.0.1:1"], "cannot connect"),
        (["request", "a", "b", "--server", "127.0.0.1:1"], "cannot connect"),
        (["reply", "a", "b", "--server", "127.0.0.1:1"], "cannot connect"),
        (["serve", "a", "--server", "127.0.0.1:1"], "cannot connect"),
        (["serve", "a", "--mode", "array", "--codec", "jsonl"], "needs a fixed-size codec"),
        (["pub", "a", "b", "--server", "nats://127.0.0.1:port"], "bad NATS URL"),
        (["pub", "a", "b", "--server", "http://127.0.0.1:4222"], "scheme must be nats://"),
        (["pub", "a", "b", "--header", "no-colon"], "is not NAME:VALUE"),
        (["pub", "a", "b", "--count", "0"], "--count"),
        (["request", "a", "b", "--timeout", "0"], "--timeout"),
        (["sub", "a", "--server", " , "], "need at least one server URL"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], needle: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert needle in lines[0]


def test_invalid_subject_is_one_line_and_exit_2(nats_server: NatsServer) -> None:
    result = run("pub", "a b", "x", "--server", nats_server.url)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "railcar: error: invalid subject 'a b': it holds whitespace or an empty token"
    ]


def test_sub_says_so_when_its_server_goes_away(
    start_nats: type[NatsServer], background: list[subprocess.Popen[str]]
) -> None:
    server = start_nats()
    sub = start(background, "sub", "gone", "--server", server.url)
    server.stop()
    _, err = sub.communicate(timeout=10)
    assert sub.returncode == 2
    # Only the command's line: the library's warning of the loss would say it twice.
    assert err.strip().splitlines() == ["railcar: error: connection lost: connection closed by the server"]


def _misbehave(conn: socket.socket, how: str) -> None:
    """One connection of a fake NATS server that goes wrong ``how``, before or after the handshake."""
    with conn:
        if how == "garbage":
            conn.sendall(b"GARBAGE\r\n")
        elif how == "bad INFO":
            conn.sendall(b"INFO {not json\r\n")
        else:
            conn.sendall(b'INFO {"server_id":"fake","max_payload":1048576}\r\n')
            reader = conn.makefile("rb")
            assert reader.readline().startswith(b"CONNECT ")
            assert reader.readline() == b"PING\r\n"
            conn.sendall(b"PONG\r\n")
            reader.readline()  # the PUB
            if how == "-ERR":  # then closes, as nats-server does after a fatal error
                conn.sendall(b"-ERR 'Maximum Payload Violation'\r\n")
            else:  # a reset
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        conn.recv(1)  # until the client gives up


@pytest.mark.parametrize(
    ("how", "says"),
    [
        (
            "garbage",
            "cannot connect to nats://127.0.0.1:{port}: invalid data from the server: unknown operation",
        ),
        (
            "bad INFO",
            "cannot connect to nats://127.0.0.1:{port}: invalid data from the server: INFO is not JSON",
        ),
        ("-ERR", "server closed the connection: Maximum Payload Violation"),
        ("reset", "connection lost: [Errno 104] Connection reset by peer"),
    ],
)
def test_a_misbehaving_server_is_one_error_line_and_exit_2(how: str, says: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        server = threading.Thread(target=lambda: _misbehave(listener.accept()[0], how), daemon=True)
        server.start()
        result = run("pub", "x", "hi", "--server", f"nats://127.0.0.1:{port}")
        server.join(10)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("railcar: error: " + says.format(port=port)), result.stderr


def test_an_error_that_leaves_the_connection_up_is_one_warning_line(start_nats: StartNats) -> None:
    server = start_nats(
        'authorization { users = [ {user: "app", password: "pw", permissions: {publish: {allow: "ok.>"}}} ] }'
    )
    url = server.url.replace("nats://", "nats://app:pw@")
    result = run("pub", "no.x", "hi", "--server", url)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ['railcar: warning: Permissions Violation for Publish to "no.x"']


def test_the_library_log_still_shows_when_asked_for() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        server = threading.Thread(target=lambda: _misbehave(listener.accept()[0], "garbage"), daemon=True)
        server.start()
        result = subprocess.run(
            [
                *RAILCAR[:-1],
                "--log-level",
                "warning",
                "nats",
                "pub",
                "x",
                "hi",
                "--server",
                f"nats://127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        server.join(10)
    assert result.returncode == 2
    warning, error = result.stderr.splitlines()
    assert warning.startswith("railcar: WARNING railcar.nats: closing connection to 127.0.0.1:")
    assert error.startswith("railcar: error: cannot connect to")


def test_bench_smoke_runs_every_scenario_beside_nats_py(tmp_path: Path) -> None:
    md = tmp_path / "BENCH.md"
    result = run(
        "bench",
        "--msgs",
        "2000",
        "--requests",
        "300",
        "--calls",
        "300",
        "--services",
        "1,2",
        "--rounds",
        "1",
        "--json",
        "--md",
        str(md),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    services = [r for r in doc["results"] if r["scenario"] == "service"]
    assert [(r["services"], r["lost"]) for r in services] == [(1, 0), (2, 0)]
    assert all(r["calls_per_s"] > 0 for r in services)
    assert all(r["records_per_s"] == pytest.approx(r["calls_per_s"] * 10, rel=1e-3) for r in services)
    assert services[0]["scaling"] == 1.0
    rows = {(r["scenario"], r["system"]): r for r in doc["results"] if r["scenario"] != "service"}
    assert set(rows) == {(s, n) for s in ("pub", "pubsub", "reqrep") for n in ("railcar", "nats-py")}
    for (scenario, _), row in rows.items():
        assert row["msgs_per_s"] > 0
        assert row["lost"] == 0
        assert len(row["runs"]) == 1
        assert scenario != "pub" or row["server_cpu"] >= 0
    assert all("ratio" in row for (_, system), row in rows.items() if system == "railcar")
    text = md.read_text()
    assert "<!-- bench:nats -->" in text
    assert "railcar nats bench --msgs 2000" in text
    assert "| pubsub   | nats-py |" in text
    assert "<!-- bench:nats-services -->" in text
    assert "| 2        |" in text.split("<!-- bench:nats-services -->")[1]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["bench", "--msgs", "0"], "--msgs"),
        (["bench", "--scenario", "teleport"], "'teleport' is not one of"),
        (["bench", "--warmup", "2"], "--warmup"),
        (["bench", "--services", "0,1"], "need counts of at least 1"),
        (["bench", "--services", "one"], "not a list of counts"),
        (["bench", "--md", "/nonexistent-dir/BENCHMARKS.md"], "does not exist"),
    ],
)
def test_bench_bad_arguments_are_one_line(args: list[str], needle: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
