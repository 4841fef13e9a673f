"""What ``railcar load`` sends and expects, per protocol, without sockets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from railcar.errors import ProtocolError
from railcar.load.workloads import Workload
from railcar.proto import reqrep as wire


@given(st.integers(min_value=1, max_value=200), st.integers(min_value=1, max_value=5), st.data())
def test_echo_replies_complete_in_any_split(size: int, count: int, data: st.DataObject) -> None:
    session = Workload("echo", size).session(3)
    sent = session.requests(count)
    assert len(sent) == size * count
    done = 0
    position = 0
    while position < len(sent):
        step = data.draw(st.integers(min_value=1, max_value=len(sent) - position))
        completed, failed = session.feed(sent[position : position + step])
        assert failed == 0
        done += completed
        position += step
        assert done == position // size
    assert done == count


def test_echo_messages_are_numbered_so_a_replay_is_caught() -> None:
    session = Workload("echo", 16).session(0)
    first = session.requests(1)
    second = session.requests(1)
    assert first != second
    with pytest.raises(ProtocolError):
        session.feed(second)


def test_more_bytes_than_requested_is_a_mismatch() -> None:
    session = Workload("echo", b"hi").session(0)
    sent = session.requests(1)
    with pytest.raises(ProtocolError, match="more than"):
        session.feed(sent + b"!")


def test_resp_ping_expects_pong() -> None:
    session = Workload("resp").session(0)
    assert session.requests(2) == b"*1\r\n$4\r\nPING\r\n" * 2
    assert session.feed(b"+PONG\r\n+PO") == (1, 0)
    assert session.feed(b"NG\r\n") == (1, 0)
    session.requests(1)
    with pytest.raises(ProtocolError):
        session.feed(b"-ERR no\r\n")


def test_reqrep_frames_expect_each_number_plus_one() -> None:
    session = Workload("reqrep").session(0)
    request = session.requests(3)
    reader = wire.FrameReader()
    (frame,) = reader.feed(request)
    assert (frame.kind, frame.count) == (wire.REQUEST, 3)
    values = [int.from_bytes(frame.payload[i : i + 4], "little") for i in range(0, 12, 4)]
    reply = bytearray()
    wire.append_frame(
        reply, wire.REPLY, 3, frame.first_id, b"".join((v + 1).to_bytes(4, "little") for v in values)
    )
    assert session.feed(bytes(reply[:10])) == (0, 0)
    assert session.feed(bytes(reply[10:])) == (3, 0)


def test_http_counts_error_statuses_as_failed() -> None:
    session = Workload("http", host="example").session(0)
    assert session.requests(2) == b"GET / HTTP/1.1\r\nHost: example\r\n\r\n" * 2
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    error = b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n"
    assert session.feed(ok + error) == (2, 1)


def test_bad_workloads_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown protocol"):
        Workload("smtp")
    with pytest.raises(ValueError, match="at least 1 byte"):
        Workload("echo", 0)
