"""A bench's load run: a server that answers nothing is measured as 0, with its errors, not fatal."""

from __future__ import annotations

import os
import socket

from railcar.bench.load import latency_text, measure, railcar_load


def test_a_server_that_answers_nothing_is_measured_as_zero() -> None:
    with socket.socket() as silent:  # accepts (the kernel's backlog) and never reads
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        measured = measure(railcar_load("kvbin", 2), port, os.getpid(), 0.5, os.sched_getaffinity(0))
    assert measured["ops_per_s"] == 0
    assert measured["errors"] == 2  # both clients' requests, timed out at the run's end
    assert (measured["p50_us"], measured["p99_us"]) == (None, None)
    assert latency_text({"p50": None, "p99": None}) == "— / —"
