"""How a load run is reported: a text summary and the result entry of the bench JSON shape."""

from __future__ import annotations

from typing import Any

from railcar.load.runner import LoadResult


def describe(result: LoadResult) -> str:
    """One line saying what load was applied to which target."""
    plan = result.plan
    loop = f"open loop at {plan.rate:,.0f} req/s" if plan.rate else "closed loop"
    if plan.interval and not plan.rate:
        loop += f", {plan.interval * 1000:g} ms between replies and requests"
    return (
        f"{plan.workload.protocol} load on {plan.host}:{plan.port}: {plan.users:,} users "
        f"over {result.procs} processes, pipeline {plan.pipeline}, {loop}"
    )


def text(result: LoadResult) -> str:
    """The human-readable report: counts, failures by kind, throughput, latency percentiles."""
    kinds = ", ".join(f"{kind} {n:,}" for kind, n in result.failure_kinds.items() if n)
    latency = result.latency_us()
    lines = [
        f"=== {'partial result (interrupted)' if result.interrupted else 'load test complete'} ===",
        describe(result),
        f"Connected:  {result.connected:,}",
        f"Sent:       {result.sent:,}",
        f"Received:   {result.received:,}",
        f"Failures:   {result.failures:,}" + (f" ({kinds})" if kinds else ""),
        f"Duration:   {result.elapsed:.2f} s",
        f"Throughput: {result.throughput:,.1f} req/s",
        "Latency:    " + "  ".join(f"{name} {_duration(value)}" for name, value in latency.items()),
        f"Generator:  {result.generator_rss / 2**20:,.0f} MiB peak RSS in all",
    ]
    return "\n".join(lines)


def entry(result: LoadResult, scenario: str, system: str = "railcar-load") -> dict[str, Any]:
    """The run as one result of the shared bench JSON shape, plus the load's own counts."""
    plan = result.plan
    return {
        "scenario": scenario,
        "system": system,
        "ops_per_s": round(result.throughput, 1),
        "errors": result.failures + result.failure_kinds["connect"],
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
            {"t": s.t, "ops_per_s": s.rate, "p50_us": s.p50_us, "p99_us": s.p99_us} for s in result.series
        ],
    }


def _duration(us: float) -> str:
    if us >= 1_000_000:
        return f"{us / 1_000_000:.2f}s"
    if us >= 1000:
        return f"{us / 1000:.2f}ms"
    return f"{us:.0f}us"
