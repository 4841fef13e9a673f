"""``railcar load --plot``: latency by percentile and throughput over time, as a PNG."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import TYPE_CHECKING

from railcar.errors import RailcarError
from railcar.load.report import describe
from railcar.load.runner import LoadResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_PERCENTILES = (0.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999)


def check_available() -> None:
    """Raise RailcarError if matplotlib, which ``--plot`` needs, is not installed."""
    if importlib.util.find_spec("matplotlib") is None:
        raise RailcarError("--plot needs matplotlib: pip install 'railcar[plot]'")


def write_png(result: LoadResult, path: Path) -> None:
    """Draw the run into ``path``; raises RailcarError without matplotlib or if the file is unwritable."""
    figure = draw(result)
    import matplotlib.pyplot as plt  # noqa: PLC0415 - draw() has checked it is there

    try:
        figure.savefig(path, dpi=100, format="png")
    except OSError as exc:
        raise RailcarError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(figure)


def draw(result: LoadResult) -> Figure:
    """The figure of the run (close it with ``pyplot.close``); raises RailcarError without matplotlib."""
    check_available()
    import matplotlib as mpl  # noqa: PLC0415 - optional dependency, slow to import, only for --plot

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, (by_percentile, over_time) = plt.subplots(1, 2, figsize=(13, 5), layout="constrained")
    figure.suptitle(describe(result), fontsize=10)
    hist = result.histogram
    if hist.get_total_count():
        # x = 1 / (1 - p) on a log axis spreads the tail, as HdrHistogram's own plots do
        xs = [1 / (1 - p / 100) for p in _PERCENTILES]
        ys = [hist.get_value_at_percentile(p) / 1000 for p in _PERCENTILES]
        by_percentile.plot(xs, ys, marker="o")
        by_percentile.set_xscale("log")
        by_percentile.set_xticks(xs, [f"{p:g}%" for p in _PERCENTILES], rotation=45, fontsize=8)
        by_percentile.minorticks_off()
    by_percentile.set_xlabel("percentile")
    by_percentile.set_ylabel("latency (µs)")
    by_percentile.set_title("latency by percentile")
    by_percentile.grid(visible=True, alpha=0.3)
    # each bin drawn at its middle; a bin without a timed reply leaves a gap, not a zero latency
    times = [s.t + s.seconds / 2 for s in result.series]
    over_time.plot(times, [s.rate for s in result.series], color="tab:blue", label="replies/s")
    over_time.set_xlabel("time (s)")
    over_time.set_ylabel("replies/s", color="tab:blue")
    over_time.set_title("throughput and latency over time")
    latency_axis = over_time.twinx()
    latency_axis.plot(times, [_or_nan(s.p50_us) for s in result.series], color="tab:green", label="p50")
    latency_axis.plot(times, [_or_nan(s.p99_us) for s in result.series], color="tab:red", label="p99")
    latency_axis.set_ylabel("latency (µs)")
    latency_axis.legend(loc="upper right")
    if result.series:  # after this line, only the replies to the last requests arrive
        over_time.axvline(result.loaded, color="grey", linestyle="--", linewidth=1)
    over_time.grid(visible=True, alpha=0.3)
    # from 0: an axis that starts at the lowest value draws a small dip as a collapse
    for axis in (by_percentile, over_time, latency_axis):
        axis.set_ylim(bottom=0)
    return figure


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else value
