"""``railcar bench echo`` and ``railcar bench idle``: every engine beside plain asyncio and uvloop."""

from __future__ import annotations

import socket
import statistics
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import click

from railcar.bench.prime import ECHO
from railcar.bench.procs import (
    alternate,
    cpu_cells,
    cpu_medians,
    cpu_text,
    measure_load,
    parse_engines,
    running_server,
)
from railcar.engine import available_engines
from railcar.limits import raise_open_file_limit, rss_bytes
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
    si,
    table,
)


@dataclass(frozen=True)
class System:
    """A server under test: how to start it and which peer it is compared with."""

    name: str
    argv: tuple[str, ...]
    peer: str | None = None


PEERS = {
    "uvloop-protocol": System("uvloop-protocol", ("railcar.bench.echo_peers", "uvloop-protocol")),
    "asyncio-protocol": System("asyncio-protocol", ("railcar.bench.echo_peers", "asyncio-protocol")),
    "asyncio-streams": System("asyncio-streams", ("railcar.bench.echo_peers", "asyncio-streams")),
}

# The peer each engine is judged against (the targets).
MATCHING_PEER = {
    "uvloop": "uvloop-protocol",
    "asyncio": "asyncio-protocol",
    "epoll": "uvloop-protocol",
    "threads": "asyncio-streams",
    "uring": "uvloop-protocol",
}


def _engine_system(engine: str, with_peers: bool) -> System:
    return System(
        f"railcar-{engine}",
        ("railcar", "serve", "echo", "--engine", engine, "--port", "0"),
        MATCHING_PEER[engine] if with_peers else None,
    )


def _systems(engines: list[str], with_peers: bool) -> list[System]:
    """Engines interleaved with their peers, so that railcar and peer alternate (A B A B)."""
    order: list[System] = []
    for engine in engines:
        order.append(_engine_system(engine, with_peers))
        peer = MATCHING_PEER[engine]
        if with_peers and PEERS[peer] not in order:
            order.append(PEERS[peer])
    if with_peers:
        order.extend(peer for peer in PEERS.values() if peer not in order)
    return order


def _measure_echo(
    system: System, conns: int, size: int, seconds: float, warmup: float, load_procs: int
) -> dict[str, float]:
    """Run the ping-pong load against one system; return rate, errors and server and load CPU use."""
    shares = [conns // load_procs + (i < conns % load_procs) for i in range(load_procs)]
    run = measure_load(
        system.argv,
        ECHO,
        [
            [
                "railcar.bench.echo_load",
                *("--conns", str(share), "--size", str(size)),
                *("--warmup", str(warmup), "--seconds", str(seconds)),
            ]
            for share in shares
        ],
        timeout=seconds + warmup + 30,
    )
    ops_per_s = sum(load["round_trips"] / load["elapsed"] for load in run.results)
    return {
        "ops_per_s": ops_per_s,
        "errors": sum(load["errors"] for load in run.results),
        "server_cpu": run.server_cpu,
        "load_cpu": run.load_cpu,
        "server_kernel": run.server_kernel,
        # CPU-seconds per second over round trips per second: what one round trip costs the server.
        "server_us_per_op": run.server_cpu * 1e6 / max(ops_per_s, 1e-9),
    }


def _echo_results(systems: list[System], runs: dict[str, list[dict[str, float]]]) -> list[Result]:
    medians = {name: statistics.median(r["ops_per_s"] for r in rs) for name, rs in runs.items()}
    cpu_per_op = {name: statistics.median(r["server_us_per_op"] for r in rs) for name, rs in runs.items()}
    results: list[Result] = []
    for system in systems:
        measured = runs[system.name]
        result: Result = {
            "scenario": "echo",
            "system": system.name,
            "ops_per_s": round(medians[system.name], 1),
            "errors": int(sum(r["errors"] for r in measured)),
            **cpu_medians(measured),
            "server_us_per_op": round(cpu_per_op[system.name], 2),
            "server_kernel": round(statistics.median(r["server_kernel"] for r in measured), 3),
            "runs": [round(r["ops_per_s"], 1) for r in measured],
        }
        if system.peer is not None:
            result["peer"] = system.peer
            result["ratio"] = round(medians[system.name] / max(medians[system.peer], 1e-9), 3)
            # Above 1: a round trip costs railcar's server less CPU than the peer's.
            result["cpu_ratio"] = round(cpu_per_op[system.peer] / max(cpu_per_op[system.name], 1e-9), 3)
        results.append(result)
    return results


# How each system was run, and why that way (the peers as a competent user would run them).
SETTINGS = {
    "railcar": "`railcar serve echo --engine E`, defaults otherwise",
    "uvloop-protocol": (
        "the textbook `asyncio.Protocol` echo (`data_received` → `transport.write`) on uvloop "
        "(`uvloop.run`), the fastest asyncio event loop found (rloop, a Rust loop, was no faster)"
    ),
    "asyncio-protocol": "the same protocol on the stdlib loop: what runs without uvloop",
    "asyncio-streams": (
        "`asyncio.start_server` with `reader.read(65536)`, `writer.write`, `await writer.drain()` "
        "on the stdlib loop: the streams API the asyncio docs lead with"
    ),
}


def _echo_markdown(doc: dict[str, Any]) -> str:
    rows = [
        [
            r["system"],
            si(r["ops_per_s"]),
            f"{r['ratio']:.2f}× {r['peer']}" if "ratio" in r else "",
            f"{r['server_us_per_op']:.2f} µs",
            f"{r['cpu_ratio']:.2f}×" if "cpu_ratio" in r else "",
            f"{r['server_kernel'] * 100:.0f}%",
            *cpu_cells(r),
            str(r["errors"]),
        ]
        for r in doc["results"]
    ]
    systems = {"railcar" if r["system"].startswith("railcar-") else r["system"] for r in doc["results"]}
    return "\n\n".join(
        [
            "## Echo ping-pong (round trips/s)",
            header(doc),
            (
                f"{doc['connections']} connections, {doc['message_bytes']}-byte messages, one message in "
                "flight per connection; server pinned to one CPU, load "
                f"({counted(doc['load_procs'], 'process', 'processes')} on uvloop) on the others; "
                f"median of {counted(doc['rounds'], 'round')} of {doc['seconds']} s, railcar and peers "
                "alternating. CPU is in CPUs busy: near 100% on the server means it, not the load, was "
                "the limit. Server CPU per round trip is the server's CPU time over the round trips "
                "served; its ratio is the peer's over railcar's (above 1: railcar spends less). In kernel is "
                "the share of the server's CPU time spent in system calls and the network stack: "
                "the part of a round trip no engine's Python can remove."
            ),
            (
                "Every server, railcar's and the peers' alike, is measured in the state a running server "
                "is in: it first serves one connection that sends a message, reads the echo and closes "
                "(a stdlib asyncio server pays an mmap, an mremap and a munmap per read until one "
                "connection has closed: glibc's dynamic mmap threshold), then the load runs "
                f"{doc['warmup']} s unmeasured before each measured window."
            ),
            "How each system runs (a peer as a competent user would run it: its fastest settings found):",
            "\n".join(f"- **{name}**: {how}" for name, how in SETTINGS.items() if name in systems),
            table(
                [
                    "system",
                    "round trips/s",
                    "ratio",
                    "server CPU per round trip",
                    "CPU ratio",
                    "in kernel",
                    "server CPU",
                    "load CPU",
                    "errors",
                ],
                rows,
            ),
        ]
    )


common_engines = click.option(
    "--engines",
    default=lambda: ",".join(available_engines()),
    show_default="every engine that runs here (railcar engines)",
    help="Comma-separated engines to measure.",
)


@click.command("echo")
@common_engines
@click.option(
    "--seconds",
    type=FiniteFloatRange(0.1),
    default=5.0,
    show_default=True,
    help="Measured seconds per run.",
)
@rounds_option
@click.option(
    "--conns",
    type=click.IntRange(1, 10000),
    default=50,
    show_default=True,
    help="Connections, each with one message in flight.",
)
@click.option(
    "--size",
    type=click.IntRange(1, 1 << 20),
    default=64,
    show_default=True,
    help="Message size in bytes.",
)
@click.option(
    "--warmup",
    type=FiniteFloatRange(0),
    default=0.5,
    show_default=True,
    help="Seconds of load before each measured run.",
)
@click.option(
    "--load-procs",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Load processes, pinned to the CPUs the server does not use.",
)
@no_peers_option
@json_option
@md_option
def bench_echo(
    engines: str,
    seconds: float,
    rounds: int,
    conns: int,
    size: int,
    warmup: float,
    load_procs: int,
    no_peers: bool,
    as_json: bool,
    md: Path | None,
) -> None:
    """Ping-pong echo on every engine, beside plain uvloop and asyncio echo servers."""
    systems = _systems(parse_engines(engines), with_peers=not no_peers)
    raise_open_file_limit()
    runs = alternate(
        rounds,
        {s.name: partial(_measure_echo, s, conns, size, seconds, warmup, load_procs) for s in systems},
        None
        if as_json
        else lambda name, measured: (
            f"{name:<18} {si(measured['ops_per_s']):>8} round trips/s  {cpu_text(measured)}  "
            f"{measured['server_us_per_op']:.2f} µs/round trip  errors {measured['errors']:.0f}"
        ),
    )
    doc = document(
        _echo_results(systems, runs),
        seconds,
        rounds=rounds,
        connections=conns,
        message_bytes=size,
        load_procs=load_procs,
        warmup=warmup,
    )
    emit(doc, _echo_markdown(doc), "echo", as_json, md)


def _idle_rss(system: System, connections: int, settle: float) -> dict[str, float]:
    """Open ``connections`` idle connections to one system; return its RSS growth per connection."""
    with running_server(system.argv, prime=ECHO) as server:
        warm = socket.create_connection((server.host, server.port))
        _ping(warm)
        time.sleep(settle)
        before = rss_bytes(server.pid)
        socks: list[socket.socket] = []
        try:
            socks.extend(socket.create_connection((server.host, server.port)) for _ in range(connections))
            for sock in socks:
                sock.sendall(b"x")
            for sock in socks:
                if sock.recv(1) != b"x":
                    raise click.ClickException(f"{system.name} did not echo")
            time.sleep(settle)
            after = rss_bytes(server.pid)
        finally:
            for sock in socks:
                sock.close()
            warm.close()
    return {
        "rss_before": before,
        "rss_after": after,
        "bytes_per_conn": (after - before) / connections,
    }


def _ping(sock: socket.socket) -> None:
    sock.sendall(b"x")
    sock.recv(1)


@click.command("idle")
@common_engines
@click.option(
    "--connections",
    type=click.IntRange(1, 100000),
    default=10000,
    show_default=True,
    help="Idle connections opened to each server.",
)
@click.option(
    "--settle",
    type=FiniteFloatRange(0),
    default=1.0,
    show_default=True,
    help="Seconds to wait before each memory reading.",
)
@no_peers_option
@json_option
@md_option
def bench_idle(
    engines: str, connections: int, settle: float, no_peers: bool, as_json: bool, md: Path | None
) -> None:
    """Server memory per idle connection, for every engine and the plain uvloop/asyncio servers."""
    limit = raise_open_file_limit(connections * 2 + 256)
    if limit < connections + 256:
        raise click.UsageError(
            f"--connections {connections} needs {connections + 256} open files; the limit here is {limit}"
        )
    systems = [_engine_system(e, False) for e in parse_engines(engines)]
    if not no_peers:
        systems += [PEERS["uvloop-protocol"], PEERS["asyncio-protocol"]]
    results: list[Result] = []
    for system in systems:
        measured = _idle_rss(system, connections, settle)
        results.append(
            {
                "scenario": "idle",
                "system": system.name,
                "errors": 0,
                "connections": connections,
                **{k: round(v, 1) for k, v in measured.items()},
            }
        )
    doc = document(results, settle)
    rows = [
        [r["system"], f"{r['bytes_per_conn'] / 1024:.2f} KiB", f"{r['rss_after'] / 2**20:.1f} MiB"]
        for r in results
    ]
    markdown = "\n\n".join(
        [
            f"## Memory per idle connection ({connections:,} connections)",
            header(doc),
            (
                "Server RSS growth after every connection has echoed one byte and gone idle, "
                "divided by the number of connections (kernel socket buffers are not in RSS)."
            ),
            table(["system", "RSS per idle connection", "server RSS with all open"], rows),
        ]
    )
    emit(doc, markdown, "idle", as_json, md)
