"""``railcar load --plot``: latency by percentile and throughput over time, as a PNG."""

from __future__ import annotations

from pathlib import Path

from railcar.errors import RailcarError
from railcar.load.report import describe
from railcar.load.runner import LoadResult

_PERCENTILES = (0.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999)


def write_png(result: LoadResult, path: Path) -> None:
    """Draw the run into ``path``; raises RailcarError without matplotlib or if the file is unwritable."""
    try:
        import matplotlib as mpl  # noqa: PLC0415 - optional dependency, only for --plot

        mpl.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        raise RailcarError("--plot needs matplotlib: pip install 'railcar[plot]'") from None
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
    times = [s.t for s in result.series]
    over_time.plot(times, [s.rate for s in result.series], color="tab:blue", label="replies/s")
    over_time.set_xlabel("time (s)")
    over_time.set_ylabel("replies/s", color="tab:blue")
    over_time.set_title("throughput and latency over time")
    latency_axis = over_time.twinx()
    latency_axis.plot(times, [s.p50_us for s in result.series], color="tab:green", label="p50")
    latency_axis.plot(times, [s.p99_us for s in result.series], color="tab:red", label="p99")
    latency_axis.set_ylabel("latency (µs)")
    latency_axis.legend(loc="upper right")
    over_time.grid(visible=True, alpha=0.3)
    try:
        figure.savefig(path, dpi=100)
    except OSError as exc:
        raise RailcarError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(figure)
