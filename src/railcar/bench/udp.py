"""``railcar bench udp``: UDP echo datagrams/s on every datagram engine beside plain asyncio and uvloop."""

from __future__ import annotations

import socket
import statistics
from functools import partial
from pathlib import Path
from typing import Any

import click

from railcar.bench.procs import alternate, cpu_cells, cpu_medians, cpu_text, measure_load
from railcar.engine import available_datagram_engines, datagram_server_class
from railcar.errors import EngineUnavailable, RailcarError
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

PEERS = {
    "uvloop-datagram": ("railcar.bench.echo_peers", "uvloop-datagram"),
    "asyncio-datagram": ("railcar.bench.echo_peers", "asyncio-datagram"),
}
# The peer each engine is judged against: the same event loop, or the fastest one (epoll, uring).
MATCHING_PEER = {
    "uvloop": "uvloop-datagram",
    "asyncio": "asyncio-datagram",
    "epoll": "uvloop-datagram",
    "uring": "uvloop-datagram",
}
SETTINGS = {
    "railcar": "`railcar serve echo --udp --engine E`, defaults otherwise",
    "uvloop-datagram": (
        "the textbook `asyncio.DatagramProtocol` echo (`datagram_received` → `transport.sendto`) "
        "on uvloop (`uvloop.run`)"
    ),
    "asyncio-datagram": "the same protocol on the stdlib loop",
}
PRIME = b"railcar prime"


def prime_udp(host: str, port: int) -> None:
    """Send one datagram and read its echo, so every server is measured warm; raises RailcarError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        try:
            sock.connect((host, port))
            sock.send(PRIME)
            echoed = sock.recv(len(PRIME) + 1)
        except OSError as exc:
            raise RailcarError(f"no echo: {exc}") from None
    if echoed != PRIME:
        raise RailcarError(f"echoed {echoed[:40]!r}, not {PRIME!r}")


def _engines(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    for name in names:
        try:
            datagram_server_class(name)
        except EngineUnavailable as exc:
            raise click.BadParameter(str(exc), param_hint="--engines") from exc
    if not names:
        raise click.BadParameter("no engine given", param_hint="--engines")
    return names


def _systems(engines: list[str], with_peers: bool) -> list[tuple[str, tuple[str, ...], str | None]]:
    """(name, argv, peer) of every system, railcar's engines and their peers alternating."""
    order: list[tuple[str, tuple[str, ...], str | None]] = []
    for engine in engines:
        argv = ("railcar", "serve", "echo", "--udp", "--engine", engine, "--port", "0")
        order.append((f"railcar-{engine}", argv, MATCHING_PEER[engine] if with_peers else None))
        peer = MATCHING_PEER[engine]
        if with_peers and all(name != peer for name, _, _ in order):
            order.append((peer, PEERS[peer], None))
    if with_peers:
        order.extend(
            (name, argv, None) for name, argv in PEERS.items() if all(n != name for n, _, _ in order)
        )
    return order


def _measure(argv: tuple[str, ...], load: dict[str, Any]) -> dict[str, float]:
    seconds, warmup = load["seconds"], load["warmup"]
    run = measure_load(
        argv,
        prime_udp,
        [
            [
                "railcar.bench.udp_load",
                *("--sockets", str(load["sockets"]), "--size", str(load["size"])),
                *("--window", str(load["window"])),
                *("--warmup", str(warmup), "--seconds", str(seconds)),
            ]
        ],
        timeout=seconds + warmup + 30,
    )
    result = run.results[0]
    return {
        "ops_per_s": result["echoed"] / result["elapsed"],
        "lost": result["lost"],
        "errors": result["errors"],
        "server_cpu": run.server_cpu,
        "load_cpu": run.load_cpu,
    }


def _results(
    systems: list[tuple[str, tuple[str, ...], str | None]], runs: dict[str, list[dict[str, float]]]
) -> list[Result]:
    medians = {name: statistics.median(r["ops_per_s"] for r in rs) for name, rs in runs.items()}
    results: list[Result] = []
    for name, _, peer in systems:
        measured = runs[name]
        result: Result = {
            "scenario": "udp-echo",
            "system": name,
            "ops_per_s": round(medians[name], 1),
            "errors": int(sum(r["errors"] for r in measured)),
            "lost": int(sum(r["lost"] for r in measured)),
            **cpu_medians(measured),
            "runs": [round(r["ops_per_s"], 1) for r in measured],
        }
        # What this shared 2-CPU machine measures fairly: CPU per datagram, not the rate.
        result["server_us_per_datagram"] = round(result["server_cpu"] / max(medians[name], 1e-9) * 1e6, 2)
        if peer is not None:
            result["peer"] = peer
            result["ratio"] = round(medians[name] / max(medians[peer], 1e-9), 3)
        results.append(result)
    return results


def _markdown(doc: dict[str, Any]) -> str:
    rows = [
        [
            r["system"],
            si(r["ops_per_s"]),
            f"{r['ratio']:.2f}× {r['peer']}" if "ratio" in r else "",
            *cpu_cells(r),
            f"{r['server_us_per_datagram']:.1f}",
            str(r["lost"]),
            str(r["errors"]),
        ]
        for r in doc["results"]
    ]
    systems = {"railcar" if r["system"].startswith("railcar-") else r["system"] for r in doc["results"]}
    return "\n\n".join(
        [
            "## UDP echo (datagrams/s)",
            header(doc),
            (
                f"{doc['sockets']} UDP sockets in one load process (uvloop), each keeping "
                f"{doc['window']} {doc['message_bytes']}-byte datagrams in flight (an echo sends the "
                "next; a datagram unanswered for 0.2 s is counted lost and replaced); server pinned to "
                "one CPU, load on the other; datagrams echoed per second, median of "
                f"{counted(doc['rounds'], 'round')} of {doc['seconds']} s after {doc['warmup']} s "
                "unmeasured, railcar and peers alternating. CPU is in CPUs busy; server µs/datagram "
                "is the server's CPU time per datagram echoed, the figure that holds when other work "
                "shares the machine."
            ),
            "How each system runs:",
            "\n".join(f"- **{name}**: {how}" for name, how in SETTINGS.items() if name in systems),
            table(
                [
                    "system",
                    "datagrams/s",
                    "ratio",
                    "server CPU",
                    "load CPU",
                    "server µs/datagram",
                    "lost",
                    "errors",
                ],
                rows,
            ),
        ]
    )


@click.command("udp")
@click.option(
    "--engines",
    default=lambda: ",".join(available_datagram_engines()),
    show_default="every datagram engine that runs here",
    help="Comma-separated datagram engines to measure.",
)
@click.option(
    "--seconds", type=FiniteFloatRange(0.1), default=5.0, show_default=True, help="Measured seconds per run."
)
@rounds_option
@click.option(
    "--sockets", type=click.IntRange(1, 10000), default=16, show_default=True, help="Load UDP sockets."
)
@click.option(
    "--window",
    type=click.IntRange(1, 1000),
    default=8,
    show_default=True,
    help="Datagrams each socket keeps in flight.",
)
@click.option(
    "--size", type=click.IntRange(8, 65507), default=64, show_default=True, help="Datagram size in bytes."
)
@click.option(
    "--warmup",
    type=FiniteFloatRange(0),
    default=0.5,
    show_default=True,
    help="Seconds of load before each measured run.",
)
@no_peers_option
@json_option
@md_option
def bench_udp(
    engines: str,
    seconds: float,
    rounds: int,
    sockets: int,
    window: int,
    size: int,
    warmup: float,
    no_peers: bool,
    as_json: bool,
    md: Path | None,
) -> None:
    """UDP echo on every datagram engine, beside plain asyncio and uvloop DatagramProtocol servers."""
    systems = _systems(_engines(engines), with_peers=not no_peers)
    load = {"sockets": sockets, "window": window, "size": size, "seconds": seconds, "warmup": warmup}
    runs = alternate(
        rounds,
        {name: partial(_measure, argv, load) for name, argv, _ in systems},
        None
        if as_json
        else lambda name, measured: (
            f"{name:<18} {si(measured['ops_per_s']):>8} datagrams/s  {cpu_text(measured)}  "
            f"lost {measured['lost']:.0f}  errors {measured['errors']:.0f}"
        ),
    )
    doc = document(
        _results(systems, runs),
        seconds,
        rounds=rounds,
        sockets=sockets,
        window=window,
        message_bytes=size,
        warmup=warmup,
    )
    emit(doc, _markdown(doc), "udp", as_json, md)
