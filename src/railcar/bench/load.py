"""``railcar bench load``: the load generator beside redis-benchmark and wrk, against the same servers."""

from __future__ import annotations

import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import click

from railcar.bench.external import nginx_server, redis_server, tool
from railcar.bench.prime import ECHO
from railcar.bench.procs import alternate, cpu_seconds, cpu_split, running_server, wait_idle
from railcar.errors import RailcarError
from railcar.load.budget import EXIT_FAILED
from railcar.load.plan import MIN_RATE_WINDOW
from railcar.report import (
    FiniteFloatRange,
    Result,
    counted,
    document,
    emit,
    header,
    json_option,
    md_option,
    no_peers_option,
    rounds_option,
    scenario_option,
    si,
    table,
)

Measurement = dict[str, Any]


@dataclass(frozen=True)
class Tool:
    """One load tool of a scenario and how to run and read it."""

    system: str
    argv: Callable[[int, float, int], list[str]]  # (port, seconds, load CPUs) -> command
    parse: Callable[[str], Measurement]


@dataclass(frozen=True)
class Scenario:
    """A server, railcar's load and the peer tool measured against the same server."""

    name: str
    what: str
    server: str
    railcar: Tool
    peer: Tool | None
    target: str


def railcar_load(protocol: str, users: int, pipeline: int = 1, extra: tuple[str, ...] = ()) -> Tool:
    """``railcar load --json`` as a bench tool: ``users`` connections, ``extra`` arguments appended."""

    def argv(port: int, seconds: float, cpus: int) -> list[str]:
        return [
            *(sys.executable, "-m", "railcar", "load", "--host", "127.0.0.1", "--port", str(port)),
            *("--protocol", protocol, "--users", str(users), "--pipeline", str(pipeline), *extra),
            *("--duration", f"{seconds}s", "--procs", str(cpus), "--json", "--quiet"),
            # failures are counted in the table's errors column, not fatal; a run where
            # nothing was answered exits 3 and is measured as 0 (see measure)
            *("--max-failures", "100%"),
        ]

    return Tool("railcar-load", argv, _parse_railcar)


def _parse_railcar(out: str) -> Measurement:
    result = json.loads(out)["results"][0]
    return {
        "ops_per_s": result["ops_per_s"],
        "p50_us": result["latency_us"]["p50"],
        "p99_us": result["latency_us"]["p99"],
        "errors": result["errors"],
        "generator_rss_bytes": result["generator_rss_bytes"],
    }


def _redis_benchmark(pipeline: int) -> Tool:
    # redis-benchmark runs a request count, not a duration: size it from this rate guess, re-sized
    # after each run so that runs last about as long as railcar's.
    guess = {"rate": 150_000.0 * pipeline}

    def argv(port: int, seconds: float, cpus: int) -> list[str]:
        return [
            *(tool("redis-benchmark"), "-h", "127.0.0.1", "-p", str(port), "-t", "ping_mbulk"),
            *("-c", "50", "-P", str(pipeline), "-n", str(int(guess["rate"] * seconds)), "--csv"),
        ]

    def parse(out: str) -> Measurement:
        row = next(line for line in out.splitlines() if line.startswith('"PING_MBULK"'))
        fields = [field.strip('"') for field in row.split(",")]
        guess["rate"] = float(fields[1])
        return {
            "ops_per_s": float(fields[1]),
            "p50_us": float(fields[4]) * 1000,
            "p99_us": float(fields[6]) * 1000,
            "errors": 0,
        }

    return Tool(f"redis-benchmark -P {pipeline}", argv, parse)


_WRK_UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def parse_wrk(out: str) -> Measurement:
    """Rate, latency percentiles, errors and requests of one wrk run; raises RailcarError if unreadable."""
    rate = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if rate is None:
        raise RailcarError(f"cannot read wrk's output: {out[-200:]!r}")
    latency = {
        pct: float(value) * _WRK_UNITS[unit]
        for pct, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    }
    done = re.search(r"^\s*(\d+) requests in", out, re.MULTILINE)
    errors = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "ops_per_s": float(rate.group(1)),
        "requests": int(done.group(1)) if done else 0,
        "p50_us": latency.get("50", 0.0),
        "p99_us": latency.get("99", 0.0),
        "errors": (int(errors.group(1)) if errors else 0)
        + (sum(int(n) for n in socket_errors.groups()) if socket_errors else 0),
    }


def _wrk(connections: int) -> Tool:
    def argv(port: int, seconds: float, cpus: int) -> list[str]:
        return [
            # wrk takes whole seconds: a shorter run would be "-d 0s", which it refuses
            *(
                tool("wrk"),
                "-t",
                str(max(cpus, 1)),
                "-c",
                str(connections),
                "-d",
                f"{max(1, round(seconds))}s",
            ),
            *("--latency", f"http://127.0.0.1:{port}/"),
        ]

    return Tool(f"wrk -c {connections}", argv, parse_wrk)


SCENARIOS = {
    s.name: s
    for s in (
        Scenario(
            "resp-p1",
            "PING to redis-server from 50 connections, one request at a time",
            "redis",
            railcar_load("resp", 50),
            _redis_benchmark(1),
            "≥ 0.7× redis-benchmark",
        ),
        Scenario(
            "resp-p16",
            "PING to redis-server from 50 connections, 16 requests pipelined",
            "redis",
            railcar_load("resp", 50, 16),
            _redis_benchmark(16),
            "≥ 0.5× redis-benchmark",
        ),
        Scenario(
            "http",
            "GET / from 100 keep-alive connections to nginx (one worker, 13-byte plaintext reply)",
            "nginx",
            railcar_load("http", 100),
            _wrk(100),
            "≥ 0.7× wrk",
        ),
        Scenario(
            "users8000",
            "64-byte echo ping-pong from 8,000 connections to `railcar serve echo --engine epoll`",
            "railcar-echo",
            railcar_load("echo", 8000),
            None,
            "generator < 1 GiB RSS",
        ),
    )
}


@contextlib.contextmanager
def _server(kind: str, cpus: set[int]) -> Iterator[tuple[int, int]]:
    if kind == "redis":
        with redis_server(cpus) as server:
            yield server
    elif kind == "nginx":
        with nginx_server(cpus) as server:
            yield server
    else:
        argv = ("railcar", "serve", "echo", "--engine", "epoll", "--port", "0")
        with running_server(argv, cpus=cpus, prime=ECHO) as echo:
            yield echo.port, echo.pid


def measure(load: Tool, port: int, server_pid: int, seconds: float, cpus: set[int]) -> Measurement:
    """Run ``load`` once on ``cpus`` against the server; its figures and the server's CPU busy meanwhile.

    Raises RailcarError if the load tool fails.
    """
    before, started = cpu_seconds(server_pid), time.perf_counter()
    done = subprocess.run(
        load.argv(port, seconds, len(cpus)),
        capture_output=True,
        text=True,
        timeout=seconds * 3 + 120,
        check=False,
        preexec_fn=lambda: os.sched_setaffinity(0, cpus),
    )
    # railcar load's exit status 3 with its report: nothing was answered (a thread per
    # connection under thousands of clients can answer nothing in a run), a rate of 0.
    if done.returncode != 0 and not (done.returncode == EXIT_FAILED and done.stdout.startswith("{")):
        raise RailcarError(f"{load.system} failed: {(done.stderr or done.stdout).strip()[-300:]}")
    measured = load.parse(done.stdout)
    measured["server_cpu"] = (cpu_seconds(server_pid) - before) / (time.perf_counter() - started)
    wait_idle(server_pid)  # before the next run, perhaps of another server on the same CPU
    return measured


def latency_pair(measured: Measurement) -> dict[str, float | None]:
    """A run's p50 and p99 in µs, rounded; None for a run that answered nothing."""
    return {
        key: None if measured[f"{key}_us"] is None else round(measured[f"{key}_us"], 1)
        for key in ("p50", "p99")
    }


def latency_text(latency: dict[str, float | None]) -> str:
    """``p50 / p99`` for a table cell; ``—`` where nothing was answered."""
    return " / ".join("—" if latency[key] is None else f"{latency[key]:,.0f}" for key in ("p50", "p99"))


def _summary(scenario: Scenario, system: str, runs: list[Measurement]) -> Result:
    middle = sorted(runs, key=lambda m: m["ops_per_s"])[len(runs) // 2]
    result: Result = {
        "scenario": scenario.name,
        "system": system,
        "ops_per_s": round(statistics.median(m["ops_per_s"] for m in runs), 1),
        "errors": int(sum(m["errors"] for m in runs)),
        "latency_us": latency_pair(middle),
        "server_cpu": round(statistics.median(m["server_cpu"] for m in runs), 3),
        "runs": [round(m["ops_per_s"], 1) for m in runs],
    }
    if "generator_rss_bytes" in middle:
        result["generator_rss_bytes"] = max(m["generator_rss_bytes"] for m in runs)
    return result


# How each tool and server was run, and why that way (the peers as a competent user would run them).
SETTINGS = {
    "railcar-load": (
        "`railcar load --procs N` with N the load CPUs (one uvloop worker process each), "
        "`--max-failures 100%` so that failures land in the errors column"
    ),
    "redis-benchmark": (
        "`-c 50 -P N -t ping_mbulk --csv`, `-n` sized from its previous rate so that a run lasts as long "
        "as railcar's (it runs a request count; 100,000 pipelined requests are over in ~50 ms)"
    ),
    "wrk": "`-t N` with N the load CPUs (one thread each), `-c 100 --latency`; whole seconds only",
    "servers": (
        "redis-server `--save '' --appendonly no` (no persistence to slow it); nginx with one worker, "
        "`access_log off`, `keepalive_requests 100000000`; `railcar serve echo --engine epoll`"
    ),
}


def _markdown(doc: dict[str, Any]) -> str:
    rows = []
    for r in doc["results"]:
        ratio = r.get("ratio")
        rows.append(
            [
                r["scenario"],
                r["system"],
                si(r["ops_per_s"]),
                latency_text(r["latency_us"]),
                f"{ratio:.2f}×" if ratio is not None else "",
                r.get("target", ""),
                f"{r['server_cpu'] * 100:.0f}%",
                f"{r['generator_rss_bytes'] / 2**20:,.0f} MiB" if "generator_rss_bytes" in r else "",
                str(r["errors"]),
            ]
        )
    scenarios = dict.fromkeys(r["scenario"] for r in doc["results"])
    return "\n\n".join(
        [
            "## Load generator (`railcar load` beside redis-benchmark and wrk)",
            header(doc),
            (
                "Each scenario starts its server once, pinned to one CPU; `railcar load` and the peer "
                "tool take turns against it, pinned to the other CPU; median of "
                f"{counted(doc['rounds'], 'round')} of {doc['seconds']} s. Ratio: railcar load's rate "
                "over the peer's. Server CPU near 100% means the server, not the load tool, set the pace."
            ),
            (
                "Every server is measured in the state a running server is in: it first answers one "
                "request on a connection of its own that then closes, and before the first round each "
                f"tool runs its load against it for {doc['warmup']} s unmeasured."
            ),
            "\n".join(f"- **{name}**: {SCENARIOS[name].what}" for name in scenarios),
            (
                "How each tool and server runs (a peer as a competent user would run it: its fastest "
                "settings found):"
            ),
            "\n".join(f"- **{name}**: {how}" for name, how in SETTINGS.items()),
            table(
                [
                    "scenario",
                    "tool",
                    "req/s",
                    "p50 / p99 µs",
                    "ratio",
                    "target",
                    "server CPU",
                    "generator RSS",
                    "errors",
                ],
                rows,
            ),
        ]
    )


def _progress(scenario: str, system: str, m: dict[str, float]) -> str:
    return (
        f"{scenario:<10} {system:<22} {si(m['ops_per_s']):>8} req/s  server CPU {m['server_cpu'] * 100:3.0f}%"
    )


@click.command("load")
@scenario_option(list(SCENARIOS))
@click.option(
    "--seconds",
    type=FiniteFloatRange(MIN_RATE_WINDOW),
    default=5.0,
    show_default=True,
    help="Seconds per run.",
)
@rounds_option
@click.option(
    "--warmup",
    type=FiniteFloatRange(0),
    default=1.0,
    show_default=True,
    help="Seconds each tool loads a scenario's server, unmeasured, before the first round (0: none; "
    "wrk runs whole seconds, at least one).",
)
@no_peers_option
@json_option
@md_option
def bench_load(
    scenarios: tuple[str, ...],
    seconds: float,
    rounds: int,
    warmup: float,
    no_peers: bool,
    as_json: bool,
    md: Path | None,
) -> None:
    """Measure railcar load beside redis-benchmark (redis-server) and wrk (nginx) on the same servers."""
    server_cpus, load_cpus = cpu_split()
    results: list[Result] = []
    for name in scenarios or SCENARIOS:
        scenario = SCENARIOS[name]
        tools = [scenario.railcar] + ([scenario.peer] if scenario.peer and not no_peers else [])
        with _server(scenario.server, server_cpus) as (port, pid):
            if warmup:
                for load in tools:
                    measure(load, port, pid, warmup, load_cpus)
            measured = alternate(
                rounds,
                {load.system: partial(measure, load, port, pid, seconds, load_cpus) for load in tools},
                None if as_json else partial(_progress, name),
            )
        ours = _summary(scenario, scenario.railcar.system, measured[scenario.railcar.system])
        ours["target"] = scenario.target
        results.append(ours)
        if len(tools) > 1:
            assert scenario.peer is not None
            peer = _summary(scenario, scenario.peer.system, measured[scenario.peer.system])
            ours["ratio"] = round(ours["ops_per_s"] / max(peer["ops_per_s"], 1e-9), 3)
            results.append(peer)
    doc = document(results, seconds, rounds=rounds, warmup=warmup)
    emit(doc, _markdown(doc), "load", as_json, md)
