"""How a load run is reported: a text summary and the result entry of the bench JSON shape."""

from __future__ import annotations

from typing import Any

from railcar.load.plan import MIN_RATE_WINDOW
from railcar.load.runner import LoadResult


def describe(result: LoadResult) -> str:
    """One line saying what load was applied to which target."""
    plan = result.plan
    loop = f"open loop at {plan.rate:,.0f} req/s" if plan.rate else "closed loop"
    if plan.interval and not plan.rate:
        loop += f", {plan.interval * 1000:g} ms between replies and requests"
    processes = "process" if result.procs == 1 else "processes"
    return (
        f"{plan.workload.protocol} load on {plan.host}:{plan.port}: {plan.users:,} users "
        f"over {result.procs} {processes}, pipeline {plan.pipeline}, {loop}"
    )


def text(result: LoadResult) -> str:
    """The human-readable report: counts, failures by kind, throughput, latency percentiles."""
    latency = result.latency_us()
    lines = [
        f"=== {'partial result (interrupted)' if result.interrupted else 'load test complete'} ===",
        describe(result),
        f"Connected:  {result.connected:,}",
        f"Sent:       {result.sent:,}",
        f"Received:   {result.received:,}",
        f"Failures:   {_failures(result)}",
        f"Duration:   {result.elapsed:.2f} s",
        f"Throughput: {_throughput(result)}",
        "Latency:    " + "  ".join(f"{name} {_microseconds(value)}" for name, value in latency.items()),
        f"Generator:  {result.generator_rss / 2**20:,.0f} MiB peak RSS in all",
    ]
    return "\n".join(lines)


def _microseconds(us: float | None) -> str:
    """A latency for people: 850us, 2.10ms, 1.50s, or n/a when there was none to measure."""
    if us is None:
        return "n/a"
    if us >= 1_000_000:
        return f"{us / 1_000_000:.2f}s"
    if us >= 1000:
        return f"{us / 1000:.2f}ms"
    return f"{us:.0f}us"


def _failures(result: LoadResult) -> str:
    """Failed requests by kind, then the failed connects, which are not requests and not in that count."""
    kinds = result.failure_kinds
    if not result.errors:
        return "0"
    requests = ", ".join(f"{kind} {n:,}" for kind, n in kinds.items() if n and kind != "connect")
    line = f"{result.failures:,} requests" + (f" ({requests})" if requests else "")
    if kinds["connect"]:
        line += f"; also {kinds['connect']:,} failed connects (not requests, not in that count)"
    return line


def _throughput(result: LoadResult) -> str:
    rate = result.throughput
    if rate is None:
        return f"n/a (loaded {result.loaded:.2f} s; a rate needs at least {MIN_RATE_WINDOW:g} s)"
    return f"{rate:,.1f} req/s"


def entry(result: LoadResult, scenario: str, system: str = "railcar-load") -> dict[str, Any]:
    """The run as one result of the shared bench JSON shape, plus the load's own counts."""
    plan = result.plan
    rate = result.throughput
    return {
        "scenario": scenario,
        "system": system,
        "ops_per_s": None if rate is None else round(rate, 1),
        "errors": result.errors,
        "latency_us": result.latency_us(),
        "sent": result.sent,
        "received": result.received,
        "failures": result.failures,
        "failure_kinds": result.failure_kinds,
        "connected": result.connected,
        "users": plan.users,
        "procs": result.procs,
        "pipeline": plan.pipeline,
        "rate": plan.rate,
        "elapsed_s": round(result.elapsed, 3),
        "loaded_s": round(result.loaded, 3),
        "generator_rss_bytes": result.generator_rss,
        "interrupted": result.interrupted,
        "series": [
            {
                "t": round(s.t, 3),
                "seconds": round(s.seconds, 6),
                "replies": s.replies,
                "ops_per_s": round(s.rate, 1),
                "p50_us": s.p50_us,
                "p99_us": s.p99_us,
            }
            for s in result.series
        ],
    }
