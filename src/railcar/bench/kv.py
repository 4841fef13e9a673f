"""``railcar bench kv``: redis-benchmark against railcar's key–value server and redis-server, same run."""

from __future__ import annotations

import contextlib
import csv
import io
import statistics
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from railcar.bench.external import redis_server, tool
from railcar.bench.prime import RESP
from railcar.bench.procs import cpu_seconds, cpu_split, parse_engines, running_server
from railcar.errors import RailcarError
from railcar.report import Result, document, emit, header, json_option, md_option, rounds_option, si, table

TESTS = "set,get,incr,lpush,lpop"
CLIENTS = 50
#: Pipeline depth -> the issue's floor for railcar's rate over redis-server's.
TARGETS = {1: 0.7, 32: 0.5}


def _redis_benchmark(port: int, requests: int, pipeline: int, load_cpus: set[int]) -> dict[str, float]:
    """Run redis-benchmark once; return requests per second by test. Raises RailcarError if it fails."""
    argv = [
        tool("redis-benchmark"),
        *("-h", "127.0.0.1", "-p", str(port), "-c", str(CLIENTS), "-n", str(requests)),
        *("-P", str(pipeline), "-t", TESTS, "--csv"),
    ]
    done = subprocess.run(
        ["taskset", "-c", ",".join(map(str, sorted(load_cpus))), *argv],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    if done.returncode or not rows:
        raise RailcarError(f"redis-benchmark failed: {done.stderr.strip() or done.stdout.strip()}")
    return {row["test"].split()[0].lower(): float(row["rps"]) for row in rows}


@contextlib.contextmanager
def kv_server(system: str, cpus: set[int] | None) -> Iterator[tuple[int, int]]:
    """Yield (port, pid) of a primed server: redis-server, or ``railcar serve kv`` on an engine."""
    if system == "redis-server":
        with redis_server(cpus) as (port, pid):
            yield port, pid
        return
    engine = system.removeprefix("railcar-")
    argv = ("railcar", "serve", "kv", "--engine", engine, "--port", "0")
    with running_server(argv, cpus=cpus, prime=RESP) as server:
        yield server.port, server.pid


def _measure(
    system: str, pipeline: int, requests: int, rounds: int, cpus: tuple[set[int], set[int]]
) -> tuple[dict[str, float], float]:
    """Median rate per test over ``rounds`` runs against a fresh server, and its median CPU busy."""
    server_cpus, load_cpus = cpus
    runs: list[dict[str, float]] = []
    busy: list[float] = []
    with kv_server(system, server_cpus) as (port, pid):
        _redis_benchmark(port, max(requests // 10, 1000), pipeline, load_cpus)  # warm-up, unmeasured
        for _ in range(rounds):
            before = cpu_seconds(pid)
            rates = _redis_benchmark(port, requests, pipeline, load_cpus)
            runs.append(rates)
            busy.append(cpu_seconds(pid) - before)
    medians = {test: statistics.median(run[test] for run in runs) for test in runs[0]}
    return medians, statistics.median(busy)


def _markdown(doc: dict[str, Any]) -> str:
    rows = [
        [
            f"P{r['pipeline']}",
            r["test"],
            r["system"],
            si(r["ops_per_s"]),
            f"{r['ratio']:.2f}×" if "ratio" in r else "",
            f"≥ {r['target']:g}×" if "target" in r else "",
        ]
        for r in doc["results"]
    ]
    return "\n".join(
        [
            "## Key–value server (redis-benchmark, requests/s)",
            "",
            header(doc),
            "",
            (
                f"`redis-benchmark -c {CLIENTS} -n N -P P -t {TESTS} --csv` against each server in turn, the "
                "server pinned to one CPU and redis-benchmark to the other; each server is started fresh, "
                "primed with one PING connection and warmed up with a tenth of the requests, then measured; "
                "median of the rounds. Ratio: railcar's rate over redis-server's for the same test."
            ),
            "",
            (
                "- **redis-server**: Debian's redis-server 7.0, `--save '' --appendonly no` (no persistence, "
                "its fastest setting for this load)"
            ),
            "- **railcar-E**: `railcar serve kv --engine E`, no append-only file, defaults otherwise",
            "",
            table(["pipeline", "test", "system", "req/s", "ratio", "target"], rows),
        ]
    )


@click.command("kv")
@click.option(
    "--engines", default="epoll", show_default=True, help="Comma-separated railcar engines to measure."
)
@click.option(
    "--requests",
    type=click.IntRange(1000),
    default=200_000,
    show_default=True,
    help="Requests per test and run at -P 1 (ten times as many at -P 32, which is that much faster).",
)
@rounds_option
@json_option
@md_option
def bench_kv(engines: str, requests: int, rounds: int, as_json: bool, md: Path | None) -> None:
    """Measure railcar's key–value server beside redis-server with redis-benchmark, in one run."""
    systems = [f"railcar-{engine}" for engine in parse_engines(engines)]
    cpus = cpu_split()
    results: list[Result] = []
    for pipeline, target in TARGETS.items():
        count = requests * (10 if pipeline > 1 else 1)
        measured = {}
        for system in [*systems, "redis-server"]:
            rates, busy = _measure(system, pipeline, count, rounds, cpus)
            measured[system] = rates
            if not as_json:
                line = "  ".join(f"{test} {si(rate)}" for test, rate in rates.items())
                click.echo(f"P{pipeline:<3} {system:<16} {line}  (server CPU {busy:.1f} s)", err=True)
        reference = measured["redis-server"]
        for test in reference:
            for system in [*systems, "redis-server"]:
                result: Result = {
                    "pipeline": pipeline,
                    "test": test,
                    "system": system,
                    "ops_per_s": measured[system][test],
                }
                if system != "redis-server":
                    result["ratio"] = round(measured[system][test] / reference[test], 3)
                    result["target"] = target
                results.append(result)
    doc = document(results, 0.0, rounds=rounds, requests=requests)
    emit(doc, _markdown(doc), "kv", as_json, md)
