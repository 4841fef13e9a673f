"""``railcar nats bench``: railcar's NATS client beside nats-py, nats-bench style, against one nats-server.

One nats-server (pinned to one CPU, primed with one connection) serves the whole run.
Each measured run is a worker process (``bench/nats_workers.py``) pinned to the other
CPUs, for one library and one scenario; the libraries alternate within each round and the
median of the rounds is reported.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from railcar.bench.nats_server import NatsServerProcess, nats_server
from railcar.bench.procs import cpu_cells, cpu_medians, cpu_seconds, cpu_split, cpu_text, stop_process
from railcar.errors import RailcarError
from railcar.report import (
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

SCENARIOS = ("pub", "pubsub", "reqrep")
SYSTEMS = ("railcar", "nats-py")
#: Seconds a worker may take for its whole run before the bench gives up on it.
WORKER_TIMEOUT = 600.0


def _what(doc: dict[str, Any], scenario: str) -> str:
    o = doc["options"]
    size = f"{o['size']} B"
    if scenario == "pub":
        return (
            f"publish {o['msgs']:,} × {size} from {counted(o['pubs'], 'connection')}, timed until the "
            "PONG of a flush sent after the last one returns (the server has them all)"
        )
    if scenario == "pubsub":
        return (
            f"publish {o['msgs']:,} × {size} from {counted(o['pubs'], 'connection')} to "
            f"{counted(o['subs'], 'subscribing connection')} in the same process; rate = messages "
            "received by the subscribers / time until the last arrived (a dropped message is lost, "
            "not counted)"
        )
    return (
        f"{o['requesters']} concurrent requesters on one connection, {o['requests']:,} requests of "
        f"{size}, answered by a subscriber on a second connection of the same process; rate = "
        "replies received per second"
    )


SETTINGS = {
    "railcar": "`railcar.nats` on uvloop; a plain callback counts messages, `await nc.publish` answers",
    "nats-py": (
        "nats-py's asyncio client on uvloop (its fastest setting: 10× slower on some stdlib loops), "
        "default options; its callbacks must be coroutines; `await msg.respond` answers"
    ),
}


def _measure(server: NatsServerProcess, system: str, scenario: str, o: dict[str, Any]) -> dict[str, float]:
    """Run one worker; its rate, losses and the CPU the server and the worker used while measured."""
    _, load_cpus = cpu_split()
    argv = [
        sys.executable,
        "-m",
        "railcar.bench.nats_workers",
        system,
        scenario,
        "--url",
        server.url,
        *(arg for key, value in o.items() for arg in (f"--{key}", str(value))),
    ]
    worker = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(worker.pid, load_cpus)
        if _line(worker) != "start":
            raise RailcarError(f"{system} {scenario} failed before measuring: {_stderr(worker)}")
        pids = [server.proc.pid, worker.pid]
        cpu_start, wall_start = [cpu_seconds(pid) for pid in pids], time.perf_counter()
        line = _line(worker)
        wall = time.perf_counter() - wall_start
        cpu = [(cpu_seconds(pid) - start) / wall for pid, start in zip(pids, cpu_start, strict=True)]
        if not line:
            raise RailcarError(f"{system} {scenario} failed while measuring: {_stderr(worker)}")
        result = json.loads(line)
    finally:
        stop_process(worker)
    return {
        "msgs_per_s": result["msgs"] / result["elapsed"],
        "msgs": result["msgs"],
        "lost": result["lost"],
        "server_cpu": cpu[0],
        "load_cpu": cpu[1],
    }


def _line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], WORKER_TIMEOUT)
    return proc.stdout.readline().strip() if ready else ""


def _stderr(proc: subprocess.Popen[str]) -> str:
    proc.kill()
    _, err = proc.communicate(timeout=10)
    lines = err.strip().splitlines()
    return lines[-1] if lines else f"exit status {proc.returncode}"


def _results(
    runs: list[tuple[str, str]], measured: dict[tuple[str, str], list[dict[str, float]]]
) -> list[Result]:
    median = {key: statistics.median(m["msgs_per_s"] for m in values) for key, values in measured.items()}
    results: list[Result] = []
    for scenario, system in runs:
        key = (scenario, system)
        result: Result = {
            "scenario": scenario,
            "system": system,
            "msgs_per_s": round(median[key], 1),
            "lost": int(sum(m["lost"] for m in measured[key])),
            **cpu_medians(measured[key]),
            "runs": [round(m["msgs_per_s"], 1) for m in measured[key]],
        }
        if system == "railcar" and (scenario, "nats-py") in median:
            result["ratio"] = round(median[key] / max(median[(scenario, "nats-py")], 1e-9), 3)
        results.append(result)
    return results


def _markdown(doc: dict[str, Any]) -> str:
    rows = [
        [
            r["scenario"],
            r["system"],
            si(r["msgs_per_s"]),
            f"{r['ratio']:.2f}×" if "ratio" in r else "",
            *cpu_cells(r),
            str(r["lost"]),
        ]
        for r in doc["results"]
    ]
    scenarios = dict.fromkeys(r["scenario"] for r in doc["results"])
    systems = dict.fromkeys(r["system"] for r in doc["results"])
    return "\n\n".join(
        [
            "## NATS client (messages per second)",
            header(doc),
            (
                f"One nats-server {doc['nats_server']} for the whole run, pinned to one CPU; each "
                "measured run is a process of its own pinned to the other CPU, railcar and nats-py "
                f"alternating; median of {counted(doc['rounds'], 'round')}. Ratio: railcar's rate over "
                "nats-py's. The server first completes one connection's handshake; each process "
                "first opens one connection that publishes, flushes and closes, then opens its own "
                f"and runs {doc['warmup'] * 100:.0f}% of the scenario unmeasured before the measured run."
            ),
            "\n".join(f"- **{name}**: {_what(doc, name)}" for name in scenarios),
            "How each client runs:",
            "\n".join(f"- **{name}**: {SETTINGS[name]}" for name in systems),
            table(["scenario", "system", "msgs/s", "ratio", "server CPU", "load CPU", "lost"], rows),
        ]
    )


def _server_version() -> str:
    from railcar.bench.nats_server import binary  # noqa: PLC0415 - only once a run starts

    try:
        done = subprocess.run(
            [binary(), "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return "(version unknown)"
    return done.stdout.strip().removeprefix("nats-server: ") or "(version unknown)"


@click.command("bench")
@scenario_option(list(SCENARIOS))
@click.option("--pubs", type=click.IntRange(1), default=1, show_default=True, help="Publishing connections.")
@click.option("--subs", type=click.IntRange(1), default=1, show_default=True, help="Subscribing connections.")
@click.option(
    "--msgs", type=click.IntRange(1), default=1_000_000, show_default=True, help="Messages published per run."
)
@click.option("--size", type=click.IntRange(0), default=16, show_default=True, help="Payload bytes.")
@click.option(
    "--requests", type=click.IntRange(1), default=100_000, show_default=True, help="Requests per run."
)
@click.option(
    "--requesters", type=click.IntRange(1), default=100, show_default=True, help="Concurrent requesters."
)
@click.option(
    "--warmup",
    type=click.FloatRange(0, 1),
    default=0.1,
    show_default=True,
    help="Share of the work run unmeasured before each measured run.",
)
@rounds_option
@no_peers_option
@json_option
@md_option
def bench_nats(
    scenarios: tuple[str, ...],
    pubs: int,
    subs: int,
    msgs: int,
    size: int,
    requests: int,
    requesters: int,
    warmup: float,
    rounds: int,
    no_peers: bool,
    as_json: bool,
    md: Path | None,
) -> None:
    """Measure railcar's NATS client beside nats-py: publish, pub+sub, request/reply on one nats-server."""
    options = {
        "msgs": msgs,
        "size": size,
        "pubs": pubs,
        "subs": subs,
        "requests": requests,
        "requesters": requesters,
        "warmup": warmup,
    }
    systems = ("railcar",) if no_peers else SYSTEMS
    runs = [(scenario, system) for scenario in scenarios or SCENARIOS for system in systems]
    measured: dict[tuple[str, str], list[dict[str, float]]] = {run: [] for run in runs}
    server_cpus, _ = cpu_split()
    with nats_server(server_cpus) as server:
        for round_number in range(rounds):
            for scenario, system in runs:
                result = _measure(server, system, scenario, options)
                measured[(scenario, system)].append(result)
                if not as_json:
                    click.echo(
                        f"round {round_number + 1}/{rounds}  {scenario:<7} {system:<8} "
                        f"{si(result['msgs_per_s']):>8} msgs/s  {cpu_text(result)}  "
                        f"lost {result['lost']:.0f}",
                        err=True,
                    )
    doc = document(
        _results(runs, measured),
        0.0,
        rounds=rounds,
        warmup=warmup,
        options=options,
        nats_server=_server_version(),
    )
    emit(doc, _markdown(doc), "nats", as_json, md)
