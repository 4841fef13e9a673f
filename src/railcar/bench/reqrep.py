"""``railcar bench reqrep``: batched request–response scenarios beside raw uvloop, pyzmq and grpcio."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import click

from railcar.bench.procs import alternate, cpu_cells, cpu_medians, cpu_text, measure_load
from railcar.bench.reqrep_workers import PRIMES
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


@dataclass(frozen=True)
class Run:
    """One measured system of a scenario: its server, its load, and what it is compared with."""

    scenario: str
    system: str
    server: tuple[str, ...]
    client: str
    peers: tuple[str, ...] = ()


def _railcar(codec: str = "int32", mode: str = "item") -> tuple[str, ...]:
    return ("railcar", "serve", "reqrep", "--codec", codec, "--mode", mode, "--port", "0")


def _peer(name: str) -> tuple[str, ...]:
    return ("railcar.bench.reqrep_workers", "server", name, "--port", "0")


SCENARIOS: dict[str, list[Run]] = {
    "int32": [
        Run("int32", "railcar", _railcar(), "int32", ("raw-item", "pyzmq-1")),
        Run("int32", "raw-item", _peer("raw-item"), "raw-item"),
        Run("int32", "pyzmq-1", _peer("pyzmq-1"), "pyzmq-1"),
    ],
    "int32-vec": [
        Run("int32-vec", "railcar", _railcar(mode="array"), "int32-vec", ("pyzmq-1000", "raw-numpy")),
        Run("int32-vec", "raw-numpy", _peer("raw-numpy"), "raw-numpy"),
        Run("int32-vec", "pyzmq-1000", _peer("pyzmq-1000"), "pyzmq-1000"),
    ],
    "struct276": [Run("struct276", "railcar", _railcar("struct276", "array"), "struct276")],
    "jsonl": [Run("jsonl", "railcar", _railcar("jsonl"), "jsonl")],
    "call": [
        Run("call", "railcar", _railcar(), "call", ("grpc-aio",)),
        Run("call", "grpc-aio", _peer("grpc-aio"), "grpc-aio"),
    ],
    "sync": [
        Run("sync", "railcar-call", _railcar(), "sync"),
        Run("sync", "railcar-call_many", _railcar(), "sync-many"),
    ],
}

WHAT = {
    "int32": "int32 +1, the service called once per request (1,000 per frame, 8 frames in flight)",
    "int32-vec": "int32 +1 on a numpy array per frame (1,000 per frame, 8 frames in flight)",
    "struct276": "276-byte records, flags+1 on a numpy array per frame (1,000 per frame)",
    "jsonl": "JSON documents echoed, one service call each (1,000 per batch, 8 batches in flight)",
    "call": "`await client.call(n)` from 1,000 concurrent tasks; grpcio: 100 concurrent unary calls",
    "sync": "threaded SyncClient from 8 threads: `call` one at a time, or `call_many` of 1,000",
}


# How each system was run, and why that way (the peers as a competent user would run them).
SETTINGS = {
    "railcar": (
        "`railcar serve reqrep` (`--mode array` for the numpy scenarios) on uvloop; its clients on "
        "uvloop, the sync one on threads"
    ),
    "raw-*": (
        "a minimal hand-written uvloop `asyncio.Protocol` loop: length-prefixed frames of 1,000 int32, "
        "+1 per int through `array` (raw-item) or numpy (raw-numpy); its client keeps 8 frames in "
        "flight. No framing library, no per-request bookkeeping: what a tight loop costs in Python"
    ),
    "pyzmq-*": (
        "DEALER client, ROUTER server (libzmq's default socket options); pyzmq-1 sends one int per "
        "message with 1,000 messages in flight, pyzmq-1000 1,000 ints per message (one numpy array) "
        "with 8 in flight: the batched way to use zmq, and so railcar's headline comparison"
    ),
    "grpc-aio": (
        "a grpcio aio unary method on the stdlib loop (the one grpcio's aio supports), bytes in "
        "and out without protobuf, 100 concurrent calls on one channel (1,000 were no faster)"
    ),
}
SETTINGS_OF = {"raw-item": "raw-*", "raw-numpy": "raw-*", "pyzmq-1": "pyzmq-*", "pyzmq-1000": "pyzmq-*"}

# Peers that send one request per message while railcar batches them into frames:
# their ratio says so, and is not the scenario's headline.
UNBATCHED = frozenset({"pyzmq-1", "grpc-aio"})
HEADLINE = ("int32-vec", "pyzmq-1000")


def _ratio_label(scenario: str, peer: str, ratio: float) -> str:
    label = f"{ratio:.2f}× {peer}" + (" (unbatched)" if peer in UNBATCHED else "")
    return f"**{label}**" if (scenario, peer) == HEADLINE else label


def _measure(run: Run, seconds: float, warmup: float) -> dict[str, float]:
    measured = measure_load(
        run.server,
        PRIMES[run.client],
        [
            [
                "railcar.bench.reqrep_workers",
                "client",
                run.client,
                *("--warmup", str(warmup), "--seconds", str(seconds)),
            ]
        ],
        timeout=seconds + warmup + 60,
    )
    (load,) = measured.results
    return {
        "ops_per_s": load["ops"] / load["elapsed"],
        "errors": load["errors"],
        "server_cpu": measured.server_cpu,
        "load_cpu": measured.load_cpu,
    }


def _results(runs: list[Run], measured: dict[tuple[str, str], list[dict[str, float]]]) -> list[Result]:
    median = {key: statistics.median(m["ops_per_s"] for m in values) for key, values in measured.items()}
    results: list[Result] = []
    for run in runs:
        key = (run.scenario, run.system)
        result: Result = {
            "scenario": run.scenario,
            "system": run.system,
            "ops_per_s": round(median[key], 1),
            "errors": int(sum(m["errors"] for m in measured[key])),
            **cpu_medians(measured[key]),
            "runs": [round(m["ops_per_s"], 1) for m in measured[key]],
        }
        ratios = {peer: median[key] / max(median[(run.scenario, peer)], 1e-9) for peer in run.peers}
        if ratios:
            result["ratios"] = {peer: round(value, 3) for peer, value in ratios.items()}
        results.append(result)
    return results


def _markdown(doc: dict[str, Any]) -> str:
    rows = [
        [
            r["scenario"],
            r["system"],
            si(r["ops_per_s"]),
            ", ".join(_ratio_label(r["scenario"], k, v) for k, v in r.get("ratios", {}).items()),
            *cpu_cells(r),
            str(r["errors"]),
        ]
        for r in doc["results"]
    ]
    scenarios = dict.fromkeys(r["scenario"] for r in doc["results"])
    systems = dict.fromkeys(
        "railcar" if r["system"].startswith("railcar") else SETTINGS_OF.get(r["system"], r["system"])
        for r in doc["results"]
    )
    return "\n\n".join(
        [
            "## Batched request–response (requests answered per second)",
            header(doc),
            (
                "Server pinned to one CPU, load to the other; median of "
                f"{counted(doc['rounds'], 'round')} of {doc['seconds']} s, railcar and peers alternating. "
                "Ratio: railcar's rate over the peer's. railcar batches requests into frames (1,000 a frame, "
                "or as many concurrent `call`s as are waiting); "
                "a peer marked *unbatched* sends one request per message, so its ratio shows what "
                "batching gains, not a like-for-like contest: the headline is int32-vec against "
                "pyzmq-1000, both 1,000 ints per message."
            ),
            (
                "Every server, railcar's and the peers' alike, first answers one request on a "
                "connection of its own that then closes (the state a running server is in; see "
                "the echo section), then the load runs "
                f"{doc['warmup']} s unmeasured before each measured window."
            ),
            "\n".join(f"- **{name}**: {WHAT[name]}" for name in scenarios),
            "How each system runs (a peer as a competent user would run it: its fastest settings found):",
            "\n".join(f"- **{name}**: {SETTINGS[name]}" for name in systems),
            table(["scenario", "system", "req/s", "ratio", "server CPU", "load CPU", "errors"], rows),
        ]
    )


@click.command("reqrep")
@scenario_option(list(SCENARIOS))
@click.option(
    "--seconds", type=FiniteFloatRange(0.1), default=3.0, show_default=True, help="Measured seconds per run."
)
@rounds_option
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
def bench_reqrep(
    scenarios: tuple[str, ...],
    seconds: float,
    rounds: int,
    warmup: float,
    no_peers: bool,
    as_json: bool,
    md: Path | None,
) -> None:
    """Batched request–response on railcar beside a raw uvloop loop, pyzmq and grpcio."""
    runs = [run for name in scenarios or SCENARIOS for run in SCENARIOS[name]]
    if no_peers:
        runs = [Run(r.scenario, r.system, r.server, r.client) for r in runs if r.system.startswith("railcar")]
    measured = alternate(
        rounds,
        {(r.scenario, r.system): partial(_measure, r, seconds, warmup) for r in runs},
        None
        if as_json
        else lambda key, result: (
            f"{key[0]:<10} {key[1]:<18} {si(result['ops_per_s']):>8} req/s  {cpu_text(result)}  "
            f"errors {result['errors']:.0f}"
        ),
    )
    doc = document(_results(runs, measured), seconds, rounds=rounds, warmup=warmup)
    emit(doc, _markdown(doc), "reqrep", as_json, md)
