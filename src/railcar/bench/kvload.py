"""``railcar bench kvload``: ``railcar load`` against the kvbin server on each engine, 1,000 to 8,000 clients.

The original write-up's comparison, on railcar's engines: the event loops (epoll, uvloop)
against a thread per connection (threads), each serving the same GET/SET load from as many
concurrent clients, reported as operations per second per client count.
"""

from __future__ import annotations

import contextlib
import statistics
from functools import partial
from pathlib import Path
from typing import Any

import click

from railcar.bench.load import Measurement, latency_pair, latency_text, measure, railcar_load
from railcar.bench.prime import KVBIN
from railcar.bench.procs import alternate, cpu_split, parse_engines, running_server
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
    rounds_option,
    si,
    table,
)

#: What every client does: GETs and SETs half and half over 100 keys of its own, 16-byte values.
LOAD: tuple[str, ...] = ("--ratio", "1:1", "--keys", "100", "--value-size", "16")
REFERENCE = "threads"


def _clients(value: str) -> list[int]:
    """The client counts of ``--clients``; raises click.BadParameter for anything but positive integers."""
    try:
        counts = [int(part) for part in value.split(",")]
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a comma-separated list of client counts", param_hint="--clients"
        ) from None
    if not counts or min(counts) < 1:
        raise click.BadParameter("client counts must be at least 1", param_hint="--clients")
    return counts


def _summary(engine: str, clients: int, runs: list[Measurement]) -> Result:
    middle = sorted(runs, key=lambda m: m["ops_per_s"])[len(runs) // 2]
    return {
        "scenario": f"clients={clients}",
        "system": f"railcar-{engine}",
        "engine": engine,
        "clients": clients,
        "ops_per_s": round(statistics.median(m["ops_per_s"] for m in runs), 1),
        "errors": int(sum(m["errors"] for m in runs)),
        "latency_us": latency_pair(middle),
        "server_cpu": round(statistics.median(m["server_cpu"] for m in runs), 3),
        "runs": [round(m["ops_per_s"], 1) for m in runs],
    }


def _markdown(doc: dict[str, Any]) -> str:
    rows = [
        [
            f"{r['clients']:,}",
            r["engine"],
            si(r["ops_per_s"]),
            latency_text(r["latency_us"]),
            f"{r['vs_threads']:.2f}×" if "vs_threads" in r else "",
            f"{r['server_cpu'] * 100:.0f}%",
            str(r["errors"]),
        ]
        for r in doc["results"]
    ]
    return "\n\n".join(
        [
            "## Key–value server, kvbin: 1,000 to 8,000 concurrent clients per engine",
            header(doc),
            (
                "`railcar serve kv --protocol kvbin --engine E`, one server per engine, pinned to one CPU "
                "and primed; `railcar load --protocol kvbin "
                + " ".join(LOAD)
                + f" --pipeline {doc['pipeline']}` pinned to the other CPU, each client "
                + (
                    "one request at a time"
                    if doc["pipeline"] == 1
                    else f"{doc['pipeline']} requests at a time"
                )
                + " (GET and SET half and half over 100 keys of its own, 16-byte values, every value read "
                "checked against what it wrote). Each client count is measured on every engine in turn, "
                f"{counted(doc['rounds'], 'round')} of {doc['seconds']} s, median reported; every server "
                f"first carries the load for {doc['warmup']} s unmeasured. vs threads: the rate over the "
                "threads engine's (a thread per connection) at the same client count. Server CPU near "
                "100% means the server set the pace, lower that the load generator did."
            ),
            table(["clients", "engine", "ops/s", "p50 / p99 µs", "vs threads", "server CPU", "errors"], rows),
        ]
    )


def _progress(count: int, engine: str, m: dict[str, float]) -> str:
    rate = si(m["ops_per_s"])
    return f"clients {count:<6,} {engine:<8} {rate:>8} ops/s  server CPU {m['server_cpu'] * 100:3.0f}%"


@click.command("kvload")
@click.option(
    "--engines",
    default="epoll,uvloop,threads",
    show_default=True,
    help="Comma-separated railcar engines to measure.",
)
@click.option(
    "--clients",
    default="1000,2000,4000,8000",
    show_default=True,
    help="Comma-separated concurrent client counts.",
)
@click.option(
    "--seconds",
    type=FiniteFloatRange(MIN_RATE_WINDOW),
    default=5.0,
    show_default=True,
    help="Seconds per run.",
)
@click.option(
    "--pipeline",
    type=click.IntRange(1, 1000),
    default=1,
    show_default=True,
    help="Requests each client sends at a time (1: the original write-up's one request at a time).",
)
@rounds_option
@click.option(
    "--warmup",
    type=FiniteFloatRange(0),
    default=1.0,
    show_default=True,
    help="Seconds each server carries the load, unmeasured, before the first round (0: none).",
)
@json_option
@md_option
def bench_kvload(
    engines: str,
    clients: str,
    seconds: float,
    pipeline: int,
    rounds: int,
    warmup: float,
    as_json: bool,
    md: Path | None,
) -> None:
    """Measure the kvbin server on each engine under 1,000 to 8,000 concurrent railcar load clients."""
    names = parse_engines(engines)
    counts = _clients(clients)
    server_cpus, load_cpus = cpu_split()
    results: list[Result] = []
    with contextlib.ExitStack() as stack:
        servers = {
            engine: stack.enter_context(
                running_server(
                    ("railcar", "serve", "kv", "--protocol", "kvbin", "--engine", engine, "--port", "0"),
                    cpus=server_cpus,
                    prime=KVBIN,
                )
            )
            for engine in names
        }
        if warmup:
            for server in servers.values():
                measure(
                    railcar_load("kvbin", counts[0], pipeline, LOAD),
                    server.port,
                    server.pid,
                    warmup,
                    load_cpus,
                )
        for count in counts:
            tool = railcar_load("kvbin", count, pipeline, LOAD)
            runs = alternate(  # the engines take turns at each count
                rounds,
                {
                    engine: partial(measure, tool, server.port, server.pid, seconds, load_cpus)
                    for engine, server in servers.items()
                },
                None if as_json else partial(_progress, count),
            )
            measured = {engine: _summary(engine, count, runs[engine]) for engine in names}
            if REFERENCE in measured:
                reference = max(measured[REFERENCE]["ops_per_s"], 1e-9)
                for engine, result in measured.items():
                    if engine != REFERENCE:
                        result["vs_threads"] = round(result["ops_per_s"] / reference, 3)
            results.extend(measured.values())
    doc = document(results, seconds, rounds=rounds, warmup=warmup, pipeline=pipeline)
    emit(doc, _markdown(doc), "kvload", as_json, md)
