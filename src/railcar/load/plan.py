"""What a load run is asked to do, and what it counts (shared by the parent and its workers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from hdrh.histogram import HdrHistogram

from railcar.load.workloads import Workload

TICK: Final = 0.25
LOWEST_NS: Final = 1
HIGHEST_NS: Final = 1_000_000_000_000
SIGNIFICANT_DIGITS: Final = 3
# "lost": a datagram (udp-echo) that got no reply within --timeout.
FAILURE_KINDS: Final = (
    "connect",
    "reset",
    "timeout",
    "lost",
    "mismatch",
    "status",
    "wrong_value",
    "unanswered",
)
# A timer of the event loop fires up to about a millisecond early or late (libuv counts in ms).
TIMER_RESOLUTION: Final = 0.001
# The shortest load a rate is reported for: the replies to the requests still in flight
# when the load stops arrive after it, and over a shorter window they inflate the rate
# (Ctrl-C 0.02 s into a run once reported 745k req/s against a 95k/s server). A run of
# exactly this --duration may stop up to TIMER_RESOLUTION short of it and still counts.
MIN_RATE_WINDOW: Final = 2 * TICK


@dataclass(frozen=True)
class Plan:
    """What one worker process does (picklable)."""

    host: str
    port: int
    workload: Workload
    users: int
    first_user: int = 0
    duration: float = 10.0
    pipeline: int = 1
    interval: float = 0.0
    rate: float = 0.0
    timeout: float = 10.0
    connect_timeout: float = 5.0
    grace: float = 2.0


def new_histogram() -> HdrHistogram:
    """A latency histogram in nanoseconds, 1 ns to 1,000 s, three significant digits."""
    return HdrHistogram(LOWEST_NS, HIGHEST_NS, SIGNIFICANT_DIGITS)


def request_failures(failure_kinds: dict[str, int]) -> int:
    """Requests that got no good reply, from the counts by kind (connect errors are not requests)."""
    return sum(n for kind, n in failure_kinds.items() if kind != "connect")
