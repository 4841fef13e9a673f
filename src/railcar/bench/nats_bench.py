"""``railcar nats bench``: railcar's NATS client beside nats-py, nats-bench style, against one nats-server.

One nats-server (pinned to one CPU, primed with one connection) serves the whole run.
Each measured run is a worker process (``bench/nats_workers.py``) pinned to the other
CPUs, for one library and one scenario; the libraries alternate within each round and the
median of the rounds is reported.  The service scenario (``bench/nats_services.py``)
measures railcar alone through 1, 2, 3 … ``railcar nats serve`` processes and is written
as a section of its own (``bench:nats-services``).
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

from railcar.bench import nats_services
from railcar.bench.nats_server import NatsServerProcess, nats_server
from railcar.bench.procs import cpu_cells, cpu_medians, cpu_seconds, cpu_split, cpu_text
from railcar.errors import RailcarError
from railcar.procs import stop_process
from railcar.report import (
    Result,
    counted,
    document,
    header,
    json_option,
    md_option,
    no_peers_option,
    print_json,
    rounds_option,
    scenario_option,
    si,
    table,
    update_markdown,
)

SCENARIOS = ("pub", "pubsub", "reqrep", "service")
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


def _measure(
    server: NatsServerProcess,
    system: str,
    scenario: str,
    o: dict[str, Any],
    load_cpus: set[int],
    services: tuple[int, ...] = (),
) -> dict[str, float]:
    """Run one worker; its rate, losses and the CPU the server, the worker and ``services`` used."""
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
        pids = [server.proc.pid, worker.pid, *services]
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
        "services_cpu": sum(cpu[2:]),
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
    client_results = [r for r in doc["results"] if r["scenario"] != "service"]
    rows = [
        [
            r["scenario"],
            r["system"],
            si(r["msgs_per_s"]),
            f"{r['ratio']:.2f}×" if "ratio" in r else "",
            *cpu_cells(r),
            str(r["lost"]),
        ]
        for r in client_results
    ]
    scenarios = dict.fromkeys(r["scenario"] for r in client_results)
    systems = dict.fromkeys(r["system"] for r in client_results)
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
    "--services",
    "service_counts",
    default="1,2,3",
    show_default=True,
    callback=lambda _ctx, _param, value: nats_services.parse_services(value),
    help="Service scenario: the numbers of `railcar nats serve` processes to measure, comma-separated.",
)
@click.option(
    "--calls", type=click.IntRange(1), default=20_000, show_default=True, help="Service: calls per run."
)
@click.option(
    "--batch", type=click.IntRange(1), default=10, show_default=True, help="Service: records per call."
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
    service_counts: list[int],
    calls: int,
    batch: int,
    warmup: float,
    rounds: int,
    no_peers: bool,
    as_json: bool,
    md: Path | None,
) -> None:
    """Measure railcar's NATS client beside nats-py (publish, pub+sub, request/reply), and services."""
    options = {
        "msgs": msgs,
        "size": size,
        "pubs": pubs,
        "subs": subs,
        "requests": requests,
        "requesters": requesters,
        "calls": calls,
        "batch": batch,
        "warmup": warmup,
    }
    chosen = scenarios or SCENARIOS
    systems = ("railcar",) if no_peers else SYSTEMS
    runs = [(scenario, system) for scenario in chosen if scenario != "service" for system in systems]
    counts = service_counts if "service" in chosen else []
    measured: dict[tuple[str, str], list[dict[str, float]]] = {run: [] for run in runs}
    by_count: dict[int, list[dict[str, float]]] = {count: [] for count in counts}
    server_cpus, load_cpus = cpu_split()
    services_load, services_cpus = nats_services.placement(load_cpus)
    with nats_server(server_cpus) as server:
        for round_number in range(rounds):
            for scenario, system in runs:
                result = _measure(server, system, scenario, options, load_cpus)
                measured[(scenario, system)].append(result)
                _progress(as_json, f"round {round_number + 1}/{rounds}  {scenario:<7} {system:<8}", result)
            for count in counts:
                with nats_services.running_services(server.url, count, services_cpus) as procs:
                    pids = tuple(proc.pid for proc in procs)
                    result = _measure(server, "railcar", "service", options, services_load, pids)
                by_count[count].append(result)
                _progress(as_json, f"round {round_number + 1}/{rounds}  service x{count}", result, "calls")
    results = _results(runs, measured)
    if counts:
        results += nats_services.results(counts, by_count, batch)
    doc = document(
        results,
        0.0,
        rounds=rounds,
        warmup=warmup,
        options=options,
        nats_server=_server_version(),
        placement=nats_services.describe_placement(server_cpus, services_load, services_cpus),
    )
    sections = []
    if runs:
        sections.append(("nats", _markdown(doc)))
    if counts:
        sections.append(("nats-services", nats_services.markdown(doc)))
    if as_json:
        print_json(doc)
    for key, text in sections:
        if not as_json:
            click.echo(text)
        if md is not None:
            try:
                update_markdown(md, key, text)
            except OSError as exc:
                raise click.ClickException(f"cannot write {md}: {exc.strerror or exc}") from exc


def _progress(as_json: bool, what: str, result: dict[str, float], unit: str = "msgs") -> None:
    """One progress line on stderr per measured run (none with --json)."""
    if not as_json:
        click.echo(
            f"{what}  {si(result['msgs_per_s']):>8} {unit}/s  {cpu_text(result)}"
            + (f" services {result['services_cpu'] * 100:3.0f}%" if unit == "calls" else "")
            + f"  lost {result['lost']:.0f}",
            err=True,
        )
