"""``railcar bench workers``: HTTP plaintext from one worker and from two, the load on the same CPUs."""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

import click

from railcar.bench.http import CONNECTIONS, PIPELINE, ROUTE, h2load
from railcar.bench.prime import http_get
from railcar.bench.procs import cpu_seconds, parse_engines, running_server
from railcar.procs import child_pids
from railcar.report import Result, document, emit, header, json_option, md_option, rounds_option, si, table

#: The issue's floor for two workers against one, the load sharing the same CPUs.
TARGET = 0.9
SETUPS = (
    ("1 worker", 1, "sharding"),
    ("2 workers sharding", 2, "sharding"),
    ("2 workers reactor", 2, "reactor"),
)


def _prime(host: str, port: int) -> None:
    http_get(host, port, path=ROUTE)


def _run(engine: str, workers: int, architecture: str, seconds: int) -> dict[str, float]:
    """One fresh server, warmed up, then one measured h2load run; its rate and CPU per request."""
    argv = ["railcar", "serve", "http", "--engine", engine, "--port", "0", "--workers", str(workers)]
    argv += ["--architecture", architecture]
    cpus = set(os.sched_getaffinity(0))
    with running_server(argv, prime=_prime) as server:
        pids = [server.pid, *(child_pids(server.pid) if workers > 1 else [])]
        h2load(server.port, max(seconds // 2, 1), cpus)  # warm-up, unmeasured
        before = sum(cpu_seconds(pid) for pid in pids)
        result = h2load(server.port, seconds, cpus)
        result["cpu_us"] = (sum(cpu_seconds(pid) for pid in pids) - before) / max(result["requests"], 1) * 1e6
    return result


def _markdown(doc: dict[str, Any]) -> str:
    rows = [
        [
            r["system"],
            si(r["ops_per_s"]),
            f"{r['server_cpu_us_per_request']:.2f}",
            f"{r['ratio']:.2f}×" if "ratio" in r else "",
            f"{r['errors']:.0f}",
        ]
        for r in doc["results"]
    ]
    return "\n".join(
        [
            "## Workers: one process against two",
            "",
            header(doc),
            "",
            (
                f"`railcar serve http --workers N` answering `GET {ROUTE}` to h2load (`--h1 -c{CONNECTIONS} "
                f"-m{PIPELINE}`); server and load share every CPU (two workers are pinned one per CPU, the "
                "load and a single worker are not). Each run starts a fresh server, primes and warms it up; "
                "medians of the rounds. Server CPU: user + system time of the supervisor and its workers "
                f"per request. Ratio: req/s over one worker's (target ≥ {TARGET:g}×)."
            ),
            "",
            table(["system", "req/s", "server CPU µs/req", "ratio", "errors"], rows),
        ]
    )


@click.command("workers")
@click.option("--engine", default="uvloop", show_default=True, help="railcar engine of every worker.")
@click.option(
    "--seconds",
    type=click.IntRange(1, 3600),
    default=5,
    show_default=True,
    help="Length of each measured run.",
)
@rounds_option
@json_option
@md_option
def bench_workers(engine: str, seconds: int, rounds: int, as_json: bool, md: Path | None) -> None:
    """Measure `railcar serve http` with one worker and with two, the load on the same CPUs."""
    (engine,) = parse_engines(engine)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in SETUPS}
    for _ in range(rounds):  # A B C A B C: drift on the host hits every setup alike
        for name, workers, architecture in SETUPS:
            measured = _run(engine, workers, architecture, seconds)
            runs[name].append(measured)
            if not as_json:
                click.echo(
                    f"{name:<20} {si(measured['ops_per_s']):>8} req/s  {measured['cpu_us']:.2f} µs/req",
                    err=True,
                )
    medians = {
        name: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for name, rs in runs.items()
    }
    one = medians[SETUPS[0][0]]["ops_per_s"]
    results: list[Result] = []
    for name, m in medians.items():
        result: Result = {
            "system": f"railcar-{engine} {name}",
            "ops_per_s": m["ops_per_s"],
            "server_cpu_us_per_request": round(m["cpu_us"], 3),
            "errors": m["errors"],
            "runs": [round(r["ops_per_s"], 1) for r in runs[name]],
        }
        if name != SETUPS[0][0]:
            result["ratio"] = round(m["ops_per_s"] / one, 3) if one else 0.0
            result["target"] = TARGET
        results.append(result)
    doc = document(results, seconds, rounds=rounds)
    emit(doc, _markdown(doc), "workers", as_json, md)
