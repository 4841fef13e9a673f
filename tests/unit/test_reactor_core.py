"""The reactor core on its own: call queue, deferred events, stop deadline, accept pause, output queue."""

from __future__ import annotations

import errno
import logging
import select
import time

import pytest

from railcar import Conn, Handler
from railcar.engine._output import OutputQueue, unsent
from railcar.engine._reactor import AcceptPause, CallQueue, DeferredEvents, ReactorCore, StopDeadline


class FakeConn(Conn):
    """A Conn with no socket: records aborts."""

    __slots__ = ("aborted",)

    def __init__(self) -> None:
        super().__init__(("peer", 1), ("local", 2))
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True

    @property
    def closed(self) -> bool:
        return self.aborted


def test_call_queue_wakes_runs_in_order_and_refuses_once_closed(caplog: pytest.LogCaptureFixture) -> None:
    queue = CallQueue()
    ran: list[int] = []
    poller = select.poll()
    poller.register(queue.fileno(), select.POLLIN)
    assert poller.poll(0) == []

    def explode() -> None:
        raise RuntimeError("queued call bug")

    queue.put(lambda: ran.append(1))
    queue.put(explode)
    queue.put(lambda: ran.append(2))
    assert poller.poll(0) != []
    with caplog.at_level(logging.ERROR, logger="railcar.engine"):
        queue.run()
    assert ran == [1, 2]
    assert poller.poll(0) == []
    assert any(r.exc_info and "queued call bug" in str(r.exc_info[1]) for r in caplog.records)
    queue.put(lambda: ran.append(3))
    queue.close()  # runs what was queued before it: nothing is stranded
    assert ran == [1, 2, 3]
    with pytest.raises(RuntimeError, match="not running"):
        queue.put(lambda: ran.append(4))


class Events(Handler):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_writable(self, conn: Conn) -> None:
        self.seen.append("writable")
        raise RuntimeError("on_writable bug")

    def on_close(self, conn: Conn, exc: BaseException | None) -> None:
        self.seen.append(f"close {exc}")
        raise RuntimeError("on_close bug")


def test_deferred_events_apply_the_handler_error_policy(caplog: pytest.LogCaptureFixture) -> None:
    handler = Events()
    events = DeferredEvents(handler)
    failing, gone = FakeConn(), FakeConn()
    gone.aborted = True
    events.writable += [failing, gone]
    events.closed.append((failing, None))
    with caplog.at_level(logging.ERROR, logger="railcar.engine"):
        events.deliver()
    assert handler.seen == ["writable", "close None"]  # none for a connection already closed
    assert failing.aborted
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("handler failed on connection") for m in messages)
    assert any("in on_close" in m for m in messages)
    assert not events.closed
    assert not events.writable


def test_stop_deadline_finishes_when_empty_at_the_deadline_or_on_abort() -> None:
    stop = StopDeadline()
    assert stop.timeout() is None
    assert not stop.finished(0, abort_now=True)  # not stopping yet
    stop.begin(10.0)
    assert stop.stopping
    assert 0 < (stop.timeout() or 0) <= 0.05
    assert stop.finished(0, abort_now=False)
    assert not stop.finished(3, abort_now=False)
    assert stop.finished(3, abort_now=True)
    stop.begin(0.0)
    assert stop.finished(3, abort_now=False)


def test_accept_pause_only_for_exhausted_resources(caplog: pytest.LogCaptureFixture) -> None:
    pause = AcceptPause()
    assert not pause.pause_for(OSError(errno.ECONNABORTED, "aborted"))
    assert not pause.paused
    with caplog.at_level(logging.WARNING, logger="railcar.engine"):
        assert pause.pause_for(OSError(errno.EMFILE, "Too many open files"))
    assert "pausing accepts for 100 ms" in caplog.text
    assert pause.paused
    assert not pause.due()
    assert 0 < (pause.timeout() or 0) <= 0.1
    pause.until = time.monotonic() - 1
    assert pause.due()
    pause.resume()
    assert not pause.paused
    assert pause.timeout() is None


def test_reactor_core_waits_for_the_nearest_of_stop_and_accept_pause() -> None:
    core = ReactorCore(Handler())
    try:
        assert core.timeout() is None
        core.accepts.until = time.monotonic() - 1
        assert core.timeout() == 0.0  # never negative
        core.accepts.resume()
        core.stop.begin(5.0)
        assert 0 < (core.timeout() or 0) <= 0.05
    finally:
        core.close()


def test_output_queue_consumes_partial_sends_without_copying() -> None:
    out = OutputQueue()
    first, second = b"abcdef", b"ghij"
    out.append(first)
    out.append(b"")
    out.append(second)
    assert out.size == 10
    assert out.batch() == [first, second]
    out.consume(4)
    assert out.size == 6
    head, tail = out.batch()
    assert bytes(head) == b"ef"
    assert tail is second
    out.consume(6)
    assert out.size == 0
    assert out.batch() == []
    out.append(b"xyz")
    out.clear()
    assert out.size == 0


def test_unsent_returns_what_a_gather_write_left() -> None:
    chunks: list[bytes | bytearray | memoryview] = [b"abc", b"de", b"f"]
    assert [bytes(c) for c in unsent(chunks, 0)] == [b"abc", b"de", b"f"]
    assert [bytes(c) for c in unsent(chunks, 4)] == [b"e", b"f"]
    assert unsent(chunks, 6) == []
