"""``railcar bench http``: the plaintext route under h2load and wrk, railcar beside socketify and granian."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import re
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from railcar.bench.external import tool
from railcar.bench.load import parse_wrk
from railcar.bench.prime import http_get, prime_server
from railcar.bench.procs import cpu_seconds, cpu_split, parse_engines, running_server
from railcar.errors import RailcarError
from railcar.procs import Command, free_port
from railcar.proto.http1 import parser_available
from railcar.report import (
    Result,
    document,
    emit,
    header,
    json_option,
    md_option,
    no_peers_option,
    rounds_option,
    si,
    table,
)

ROUTE = "/plaintext"
CONNECTIONS = 100
PIPELINE = 16
PEERS = ("socketify", "granian")
#: The issue's floors for railcar over each peer under h2load -m16.
TARGETS = {"socketify": 1.0, "granian": 2.0}
GRANIAN_FLAGS = (
    *("--interface", "rsgi", "--workers", "1", "--runtime-mode", "st", "--loop", "uvloop"),
    *("--task-impl", "rust", "--http1-pipeline-flush", "--http", "1", "--no-ws"),
)
_prime = functools.partial(http_get, path=ROUTE)


@contextlib.contextmanager
def _server(system: str, cpus: set[int]) -> Iterator[tuple[int, int]]:
    """Yield (port, pid of the process serving) for a primed server pinned to ``cpus``."""
    if system == "granian":
        port = free_port()
        granian = [
            sys.executable,
            "-m",
            "granian",
            *GRANIAN_FLAGS,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        spawned = Command(
            [*_taskset(cpus), *granian, "railcar.bench.http_peers:rsgi_app"], stderr=subprocess.PIPE
        ).start()
        try:
            spawned.wait_listening(port)
            (worker,) = spawned.child_pids()
            prime_server("granian", "127.0.0.1", port, _prime)
            yield port, worker
        finally:
            spawned.stop()
        return
    if system == "socketify":
        argv: tuple[str, ...] = ("railcar.bench.http_peers", "socketify", str(free_port()))
    else:
        engine, _, parser = system.removeprefix("railcar-").partition("/")
        argv = ("railcar", "serve", "http", "--engine", engine, "--parser", parser or "auto", "--port", "0")
    with running_server(argv, cpus=cpus, prime=_prime) as server:
        yield server.port, server.pid


def h2load(port: int, seconds: int, cpus: set[int]) -> dict[str, float]:
    """One h2load run (HTTP/1.1, pipelined); its rate and requests. Raises RailcarError if it fails."""
    argv = [
        *_taskset(cpus),
        *(tool("h2load"), "--h1"),
        *("-c", str(CONNECTIONS), "-m", str(PIPELINE), "-D", str(seconds)),
        f"http://127.0.0.1:{port}{ROUTE}",
    ]
    out = _run(argv, seconds)
    rate = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    done = re.search(
        r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored", out
    )
    if rate is None or done is None:
        raise RailcarError(f"cannot read h2load's output: {out[-300:]!r}")
    return {
        "ops_per_s": float(rate.group(1)),
        "requests": float(done.group(1)),
        "errors": float(done.group(2)) + float(done.group(3)),
    }


def _wrk(port: int, seconds: int, cpus: set[int]) -> dict[str, float]:
    """One wrk run with one thread; its rate and requests. Raises RailcarError if it fails."""
    argv = [
        *_taskset(cpus),
        *(tool("wrk"), "-t", "1"),
        *("-c", str(CONNECTIONS), "-d", f"{seconds}s", f"http://127.0.0.1:{port}{ROUTE}"),
    ]
    measured = parse_wrk(_run(argv, seconds))
    return {key: float(measured[key]) for key in ("ops_per_s", "requests", "errors")}


def _taskset(cpus: set[int]) -> list[str]:
    return ["taskset", "-c", ",".join(map(str, sorted(cpus)))]


def _run(argv: list[str], seconds: int) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode:
        raise RailcarError(f"{Path(argv[3]).name} failed: {(done.stderr or done.stdout).strip()[-300:]}")
    return done.stdout


LOADS = {
    f"h2load -c{CONNECTIONS} -m{PIPELINE}": h2load,
    f"wrk -t1 -c{CONNECTIONS}": _wrk,
}


def _measure(system: str, seconds: int, rounds: int) -> dict[str, dict[str, float]]:
    """Median rate and server CPU per request of each load against one fresh, warmed server."""
    server_cpus, load_cpus = cpu_split()
    measured: dict[str, dict[str, float]] = {}
    with _server(system, server_cpus) as (port, pid):
        h2load(port, max(seconds // 2, 1), load_cpus)  # warm-up, unmeasured
        for load, run in LOADS.items():
            runs = []
            for _ in range(rounds):
                before = cpu_seconds(pid)
                result = run(port, seconds, load_cpus)
                result["cpu_us"] = (cpu_seconds(pid) - before) / max(result["requests"], 1) * 1e6
                runs.append(result)
            measured[load] = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    return measured


def _markdown(doc: dict[str, Any]) -> str:
    rows = [
        [
            r["load"],
            r["system"],
            si(r["ops_per_s"]),
            f"{r['server_cpu_us_per_request']:.2f}",
            "  ".join(f"{r['ratio'][peer]:.2f}× {peer}" for peer in r.get("ratio", {})),
            "  ".join(f"≥ {t:g}× {peer}" for peer, t in r.get("target", {}).items()),
            f"{r['errors']:.0f}",
        ]
        for r in doc["results"]
    ]
    return "\n".join(
        [
            "## HTTP/1.1 plaintext (TechEmpower style)",
            "",
            header(doc),
            "",
            (
                f"`GET {ROUTE}` → `Hello, World!` from {CONNECTIONS} keep-alive connections: h2load "
                f"(nghttp2, `--h1 -c{CONNECTIONS} -m{PIPELINE}`, {PIPELINE} requests pipelined per "
                f"connection) and wrk (`-t1 -c{CONNECTIONS}`, one request at a time; the single wrk thread "
                "saturates near 100k req/s here, so rank servers there by their CPU per request). Each "
                "server is one process pinned to one CPU, the load on the other; it is started fresh, primed "
                "with one connection, warmed up with h2load, then measured; medians of the rounds. Server "
                "CPU: user + system time of the serving process over the run, per request answered. Ratio: "
                "railcar's req/s over the peer's under the same load."
            ),
            "",
            (
                "- **railcar-E**: `railcar serve http --engine E`, one process, default limits and timeouts; "
                "llhttp through railcar's C binding (`--parser c`, the default where built)"
            ),
            "- **railcar-E/httptools**: the same with `--parser httptools` (llhttp through httptools)",
            (
                "- **socketify**: socketify 0.0.31 (uWebSockets through cffi), native "
                "`App(request_response_factory_max_items=200_000)` and `res.send`: its fastest documented "
                "setting"
            ),
            (
                f"- **granian**: granian 2.8 RSGI, `{' '.join(GRANIAN_FLAGS)}`: its fastest flags; its "
                "worker process is the one measured"
            ),
            "",
            table(["load", "system", "req/s", "server CPU µs/req", "ratio", "target", "errors"], rows),
        ]
    )


@click.command("http")
@click.option("--engines", default="uvloop", show_default=True, help="Comma-separated railcar engines.")
@click.option(
    "--httptools/--no-httptools",
    default=True,
    show_default=True,
    help="Also measure each engine with --parser httptools (railcar-E/httptools).",
)
@click.option(
    "--seconds",
    type=click.IntRange(1, 3600),
    default=5,
    show_default=True,
    help="Length of each measured run.",
)
@no_peers_option
@rounds_option
@json_option
@md_option
def bench_http(
    engines: str, httptools: bool, seconds: int, no_peers: bool, rounds: int, as_json: bool, md: Path | None
) -> None:
    """Measure `railcar serve http` beside socketify and granian with h2load and wrk, in one run."""
    parsers = ["", "/httptools"] if httptools and parser_available("c") else [""]
    systems = [f"railcar-{engine}{parser}" for engine in parse_engines(engines) for parser in parsers]
    peers = [] if no_peers else list(PEERS)
    for peer in peers:
        _require_peer(peer)
    measured = {}
    for system in [*systems, *peers]:
        measured[system] = _measure(system, seconds, rounds)
        if not as_json:
            for load, m in measured[system].items():
                click.echo(
                    f"{load:<18} {system:<24} {si(m['ops_per_s']):>8} req/s  {m['cpu_us']:.2f} µs/req",
                    err=True,
                )
    results: list[Result] = []
    for load in LOADS:
        for system in [*systems, *peers]:
            m = measured[system][load]
            result: Result = {
                "load": load,
                "system": system,
                "ops_per_s": m["ops_per_s"],
                "server_cpu_us_per_request": round(m["cpu_us"], 3),
                "errors": m["errors"],
            }
            if system not in PEERS and peers:
                result["ratio"] = {
                    p: round(m["ops_per_s"] / measured[p][load]["ops_per_s"], 3) for p in peers
                }
                if load.startswith("h2load") and "/" not in system:  # the floors are the default parser's
                    result["target"] = {p: TARGETS[p] for p in peers}
            results.append(result)
    doc = document(results, seconds, rounds=rounds)
    emit(doc, _markdown(doc), "http", as_json, md)


def _require_peer(peer: str) -> None:
    """Raise click.ClickException naming the install command when a peer's package is missing."""
    if importlib.util.find_spec(peer) is None:
        raise click.ClickException(
            f"{peer} is not installed; install it with: pip install 'railcar[bench]' (or use --no-peers)"
        )
