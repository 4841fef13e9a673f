"""Every request frame, however the stream is cut, gets exactly one reply or one error per id."""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from railcar.engine.api import Conn
from railcar.proto.reqrep import (
    ERROR,
    REPLY,
    REPLY_IDS,
    REQUEST,
    FrameReader,
    append_frame,
    decode_errors,
    split_ids,
)
from railcar.reqrep.server import ReqRepHandler


class Recording(Conn):
    """A connection that keeps what the handler writes."""

    def __init__(self) -> None:
        super().__init__(("test", 0), ("test", 1))
        self.out = bytearray()
        self.is_closed = False

    def write(self, data: Any) -> None:
        self.out += data

    def close(self) -> None:
        self.is_closed = True

    @property
    def closed(self) -> bool:
        return self.is_closed


MAX_FRAME = 64  # frames of more than 12 requests are over the limit


def picky(number: int) -> int:
    if number % 7 == 3:
        raise ValueError(f"no {number}")
    return number * 3


@settings(max_examples=150, deadline=None)
@given(
    frames=st.lists(st.lists(st.integers(-1000, 1000), min_size=1, max_size=20), min_size=1, max_size=10),
    broken=st.sets(st.integers(0, 9)),
    data=st.data(),
)
def test_every_id_is_answered_exactly_once(
    frames: list[list[int]], broken: set[int], data: st.DataObject
) -> None:
    stream, expected, next_id = bytearray(), {}, 1
    for index, numbers in enumerate(frames):
        payload = struct.pack(f"<{len(numbers)}i", *numbers)
        if index in broken:
            payload = payload[:-1]  # a frame whose payload the codec cannot decode
        append_frame(stream, REQUEST, len(numbers), next_id, payload)
        oversized = 13 + len(payload) > MAX_FRAME  # failed whole, its payload skipped
        for offset, number in enumerate(numbers):
            ok = index not in broken and not oversized and number % 7 != 3
            expected[next_id + offset] = number * 3 if ok else None
        next_id += len(numbers)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    handler = ReqRepHandler(picky, "int32", max_frame=MAX_FRAME)
    conn = Recording()
    handler.on_open(conn)
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        handler.on_data(conn, memoryview(stream)[start:end])
    answers: dict[int, list[Any]] = {}
    for frame in FrameReader().feed(conn.out):
        if frame.kind == REPLY:
            values = struct.unpack(f"<{frame.count}i", frame.payload)
            pairs = list(zip(range(frame.first_id, frame.first_id + frame.count), values, strict=True))
        elif frame.kind == REPLY_IDS:
            ids, payload = split_ids(frame)
            pairs = list(zip(ids, struct.unpack(f"<{len(ids)}i", payload), strict=True))
        else:
            assert frame.kind == ERROR
            pairs = [
                (i, None) for first, count, _ in decode_errors(frame) for i in range(first, first + count)
            ]
        for request_id, value in pairs:
            answers.setdefault(request_id, []).append(value)
    assert answers == {request_id: [value] for request_id, value in expected.items()}
    assert not conn.closed
