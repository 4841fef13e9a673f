"""The request–response frame format: split invariance, limits, error frames."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from railcar.errors import ProtocolError
from railcar.proto.reqrep import (
    CONN_ERROR,
    ERROR,
    HEADER,
    REPLY_IDS,
    REQUEST,
    Frame,
    FrameReader,
    append_frame,
    decode_errors,
    encode_conn_error,
    encode_errors,
    encode_run_errors,
    pack_ids,
    split_ids,
)

frames_strategy = st.lists(
    st.builds(
        Frame,
        kind=st.sampled_from([REQUEST, REPLY_IDS, ERROR]),
        count=st.integers(0, 2**32 - 1),
        first_id=st.integers(0, 2**64 - 1),
        payload=st.binary(max_size=300),
    ),
    max_size=12,
)


@given(frames_strategy, st.data())
def test_any_split_gives_the_same_frames(frames: list[Frame], data: st.DataObject) -> None:
    stream = bytearray()
    for frame in frames:
        append_frame(stream, frame.kind, frame.count, frame.first_id, frame.payload)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    reader = FrameReader()
    decoded: list[Frame] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        decoded += reader.feed(memoryview(stream)[start:end])
    assert decoded == frames
    assert reader.buffered == 0


@given(st.binary(max_size=200))
def test_garbage_raises_only_protocol_error(garbage: bytes) -> None:
    reader = FrameReader(max_frame=1024)
    try:
        for frame in reader.feed(garbage):
            assert frame.kind in {1, 2, 3, 4, 5}
    except ProtocolError:
        pass


def test_oversized_frame_is_refused_from_its_header() -> None:
    reader = FrameReader(max_frame=1000)
    with pytest.raises(ProtocolError, match=r"frame length 1013 outside 13\.\.1000"):
        reader.feed(HEADER.pack(1013, REQUEST, 1, 1))


def test_unknown_kind_and_short_length_are_refused() -> None:
    with pytest.raises(ProtocolError, match="unknown frame kind 9"):
        FrameReader().feed(HEADER.pack(13, 9, 0, 0))
    with pytest.raises(ProtocolError, match="frame length 3"):
        FrameReader().feed(HEADER.pack(3, REQUEST, 0, 0))


def test_error_frames_round_trip() -> None:
    out = bytearray()
    encode_errors(out, [(7, "bad thing"), (9, "ünïcode"), (10, "ünïcode"), (11, "other")])
    encode_run_errors(out, [(100, 4_000_000_000, "every one of a huge frame")])
    frame, whole_frame = FrameReader().feed(out)
    assert frame.kind == whole_frame.kind == ERROR
    assert decode_errors(frame) == [(7, 1, "bad thing"), (9, 2, "ünïcode"), (11, 1, "other")]
    assert decode_errors(whole_frame) == [(100, 4_000_000_000, "every one of a huge frame")]
    assert len(whole_frame.payload) < 64  # failing a whole frame costs the same however many it held
    with pytest.raises(ProtocolError, match="truncated"):
        decode_errors(replace(frame, payload=frame.payload[:-3]))


def test_conn_error_and_reply_ids() -> None:
    out = bytearray()
    encode_conn_error(out, "frame too large")
    append_frame(out, REPLY_IDS, 3, 5, pack_ids([5, 9, 6]) + b"abc")
    conn_error, reply_ids = FrameReader().feed(out)
    assert conn_error.kind == CONN_ERROR
    assert conn_error.payload == b"frame too large"
    assert split_ids(reply_ids) == ([5, 9, 6], b"abc")
    with pytest.raises(ProtocolError, match="shorter than its ids"):
        split_ids(replace(reply_ids, count=40))
