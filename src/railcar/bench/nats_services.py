"""The service scenario of ``railcar nats bench``: calls/s through 1, 2, 3 … ``railcar nats serve`` processes.

Each process serves the increment app (int32, a batch per message) on one subject in one
queue group, so nats-server spreads the calls over them; one load process of railcar's
client calls the subject with ``requesters`` calls in flight.  Processes are pinned where
the machine allows: nats-server on the first CPU, the load on the next, each service on one
of the rest in turn; with fewer CPUs than that they share (and the figures say so).
"""

from __future__ import annotations

import contextlib
import os
import select
import statistics
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import click

from railcar.bench.nats_workers import SERVICE_SUBJECT
from railcar.bench.procs import cpu_cells
from railcar.errors import RailcarError
from railcar.procs import stop_process
from railcar.report import Result, counted, header, si, table

COLUMNS = ["services", "calls/s", "records/s", "scaling", "server CPU", "load CPU", "services CPU", "lost"]
#: Seconds a service process may take to say it is serving.
START_TIMEOUT = 30.0


def parse_services(value: str) -> list[int]:
    """The process counts of ``--services 1,2,3``; raises click.BadParameter (not a count ≥ 1, none)."""
    try:
        counts = [int(item) for item in value.split(",") if item.strip()]
    except ValueError:
        message = f"{value!r} is not a list of counts such as 1,2,3"
        raise click.BadParameter(message, param_hint="--services") from None
    if not counts or min(counts) < 1:
        raise click.BadParameter(f"need counts of at least 1 (got {value!r})", param_hint="--services")
    return list(dict.fromkeys(counts))


def placement(load_cpus: set[int]) -> tuple[set[int], list[set[int]]]:
    """The load's CPUs and the CPUs service processes take in turn: their own where there are enough."""
    cpus = sorted(load_cpus)
    if len(cpus) < 2:
        return set(cpus), [set(cpus)]
    return {cpus[0]}, [{cpu} for cpu in cpus[1:]]


@contextlib.contextmanager
def running_services(url: str, count: int, cpus: list[set[int]]) -> Iterator[list[subprocess.Popen[str]]]:
    """``count`` serve processes on ``url``, each serving before this yields; raises RailcarError."""
    argv = [sys.executable, "-m", "railcar", "nats", "serve", SERVICE_SUBJECT, "--server", url]
    procs: list[subprocess.Popen[str]] = []
    try:
        for number in range(count):
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            procs.append(proc)
            with contextlib.suppress(OSError):
                os.sched_setaffinity(proc.pid, cpus[number % len(cpus)])
        for proc in procs:
            assert proc.stderr is not None
            ready, _, _ = select.select([proc.stderr], [], [], START_TIMEOUT)
            line = proc.stderr.readline() if ready else ""
            if not line.startswith("serving "):
                raise RailcarError(f"railcar nats serve did not start: {line.strip() or 'no answer'}")
        yield procs
    finally:
        for proc in procs:
            stop_process(proc)


def results(counts: list[int], measured: dict[int, list[dict[str, float]]], batch: int) -> list[Result]:
    """One result per process count: median calls/s of the rounds, CPU, and the scaling over the first."""
    rows: list[Result] = []
    base = statistics.median(m["msgs_per_s"] for m in measured[counts[0]])
    for count in counts:
        runs = measured[count]
        rate = statistics.median(m["msgs_per_s"] for m in runs)
        rows.append(
            {
                "scenario": "service",
                "system": "railcar",
                "services": count,
                "calls_per_s": round(rate, 1),
                "records_per_s": round(rate * batch, 1),
                "scaling": round(rate / max(base, 1e-9), 3),
                "lost": int(sum(m["lost"] for m in runs)),
                **{
                    key: round(statistics.median(m[key] for m in runs), 3)
                    for key in ("server_cpu", "load_cpu", "services_cpu")
                },
                "runs": [round(m["msgs_per_s"], 1) for m in runs],
            }
        )
    return rows


def markdown(doc: dict[str, Any]) -> str:
    """The ``bench:nats-services`` section."""
    o = doc["options"]
    rows = [
        [
            str(r["services"]),
            si(r["calls_per_s"]),
            si(r["records_per_s"]),
            f"{r['scaling']:.2f}×",
            *cpu_cells(r),
            f"{r['services_cpu'] * 100:.0f}%",
            str(r["lost"]),
        ]
        for r in doc["results"]
        if r["scenario"] == "service"
    ]
    return "\n\n".join(
        [
            "## NATS services (calls per second through 1, 2, 3 … service processes)",
            header(doc),
            (
                f"`railcar nats serve` processes (the increment app: int32, one batch of {o['batch']} "
                "records per message each way) share one subject in one queue group; one load "
                f"process calls it with {o['requesters']} calls in flight on one connection, "
                f"{o['calls']:,} calls per run after {doc['warmup'] * 100:.0f}% unmeasured; median "
                f"of {counted(doc['rounds'], 'round')}. One nats-server for the run. CPUs: "
                f"{doc['placement']}. Scaling: calls/s over those of the first row. CPU columns: "
                "percent of one CPU (services: all processes together)."
            ),
            table(COLUMNS, rows),
        ]
    )


def describe_placement(server_cpus: set[int], load: set[int], services: list[set[int]]) -> str:
    """Where each process ran, for the report."""
    own = len(services) > 1 or services[0] != load
    return f"nats-server on {sorted(server_cpus)}, the load on {sorted(load)}, services on " + (
        f"{[min(c) for c in services]} in turn" if own else f"{sorted(load)} with the load"
    )
