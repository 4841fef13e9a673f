"""Folding latencies in bulk gives the histogram that recording them one by one gives."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from railcar.load.latency import LatencyLog
from railcar.load.plan import HIGHEST_NS, new_histogram

latencies = st.lists(
    st.tuples(st.integers(min_value=0, max_value=HIGHEST_NS * 2), st.integers(min_value=1, max_value=50)),
    max_size=300,
)


@given(st.lists(latencies, min_size=1, max_size=3))
def test_folds_match_one_by_one(folds: list[list[tuple[int, int]]]) -> None:
    # several folds into one histogram: each adds to what the ones before it left
    log, folded, direct = LatencyLog(), new_histogram(), new_histogram()
    for entries in folds:
        for value, count in entries:
            log.record(value, count)
            direct.record_value(min(max(value, 1), HIGHEST_NS), count)
        log.fold_into(folded)
        assert len(log) == 0
    assert list(folded.counts) == list(direct.counts)
    assert folded.get_total_count() == direct.get_total_count()
    for percentile in (0, 1, 50, 90, 99, 99.9, 100):
        assert folded.get_value_at_percentile(percentile) == direct.get_value_at_percentile(percentile)
    assert folded.get_min_value() == direct.get_min_value()
    assert folded.get_max_value() == direct.get_max_value()
    assert folded.encode() == direct.encode()
