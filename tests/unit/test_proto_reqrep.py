"""The request–response frame format: split invariance, limits, skipped frames, HELLO, error frames."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from railcar.errors import ProtocolError
from railcar.proto.reqrep import (
    CONN_ERROR,
    ERROR,
    HEADER,
    HELLO,
    KINDS,
    REPLY,
    REPLY_IDS,
    REQUEST,
    Frame,
    FrameReader,
    append_frame,
    decode_errors,
    decode_hello,
    encode_conn_error,
    encode_errors,
    encode_hello,
    encode_run_errors,
    framing_problem,
    hello_problem,
    pack_ids,
    request_problem,
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


LIMIT = 100  # the largest frame length read whole in the skipping tests


@st.composite
def small_and_oversized_frames(draw: st.DrawFn) -> list[Frame]:
    """Frames of the skippable kinds, some over LIMIT (counts and ids plausible), some not."""
    frames = []
    for _ in range(draw(st.integers(0, 10))):
        payload = draw(st.binary(max_size=2 * LIMIT))
        count = draw(st.integers(0, len(payload)))
        first_id = draw(st.integers(0, min(2**64 - count, 2**64 - 1)))
        frames.append(Frame(draw(st.sampled_from([REQUEST, REPLY])), count, first_id, payload))
    return frames


def expected_reading(frame: Frame) -> Frame:
    """What a reader with limit LIMIT that skips REQUEST and REPLY returns for ``frame``."""
    if 13 + len(frame.payload) > LIMIT:
        return replace(frame, payload=b"", skipped=len(frame.payload))
    return frame


@given(small_and_oversized_frames(), st.data())
def test_any_split_gives_the_same_frames_and_skips(frames: list[Frame], data: st.DataObject) -> None:
    stream = bytearray()
    for frame in frames:
        append_frame(stream, frame.kind, frame.count, frame.first_id, frame.payload)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=30)))
    reader = FrameReader(LIMIT, skip_kinds=frozenset({REQUEST, REPLY}))
    decoded: list[Frame] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        decoded += reader.feed(memoryview(stream)[start:end])
    assert decoded == [expected_reading(frame) for frame in frames]
    assert reader.buffered == 0


@given(st.binary(max_size=200), st.sets(st.sampled_from(sorted(KINDS))))
def test_garbage_raises_only_protocol_error(garbage: bytes, skip_kinds: set[int]) -> None:
    reader = FrameReader(max_frame=1024, skip_kinds=frozenset(skip_kinds))
    try:
        for frame in reader.feed(garbage):
            assert frame.kind in KINDS
            assert not frame.skipped or frame.kind in skip_kinds
    except ProtocolError:
        pass


def test_an_oversized_frame_is_returned_at_its_header_and_its_payload_dropped_as_it_comes() -> None:
    reader = FrameReader(4096, skip_kinds=frozenset({REQUEST}))
    header = HEADER.pack(13 + 100_000, REQUEST, 3, 7)
    assert reader.feed(header[:10]) == []
    assert reader.buffered == 10
    assert reader.feed(header[10:] + b"x" * 500) == [Frame(REQUEST, 3, 7, b"", skipped=100_000)]
    assert reader.buffered == 17 + 500  # of the frame: the message "ended inside a frame" stays true
    assert reader.feed(b"x" * 99_000) == []
    assert reader.buffered == 17 + 99_500
    after = bytearray()
    append_frame(after, REQUEST, 1, 10, b"next")
    assert reader.feed(b"x" * 500 + after) == [Frame(REQUEST, 1, 10, b"next")]
    assert reader.buffered == 0


def test_skipping_holds_none_of_the_skipped_bytes() -> None:
    chunk = memoryview(bytes(1 << 20))
    reader = FrameReader(4096, skip_kinds=frozenset({REQUEST}))
    reader.feed(HEADER.pack(13 + 64 * len(chunk) + 1, REQUEST, 1, 1))  # one byte more than fed
    tracemalloc.start()
    try:
        for _ in range(64):
            assert reader.feed(chunk) == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024  # 64 MiB went through; not even one chunk was kept
    assert reader.buffered == 17 + 64 * len(chunk)


@pytest.mark.parametrize(
    ("header", "why"),
    [
        (HEADER.pack(5000, REPLY, 1, 1), "kind not to skip"),
        (HEADER.pack(5000, REQUEST, 5000, 1), "more requests than payload bytes"),
        (HEADER.pack(5000, REQUEST, 2, 2**64 - 1), "ids past 2**64"),
        (HEADER.pack(5000, 9, 1, 1), "unknown kind"),
    ],
)
def test_an_implausible_oversized_header_is_still_refused(header: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=r"frame length 5000 outside 13\.\.4096"):
        FrameReader(4096, skip_kinds=frozenset({REQUEST})).feed(header)


def test_only_known_kinds_can_be_skipped() -> None:
    with pytest.raises(ValueError, match=r"unknown frame kinds to skip: \[9\]"):
        FrameReader(skip_kinds=frozenset({REQUEST, 9}))


def test_hello_round_trips_and_a_bad_answer_is_refused() -> None:
    out = bytearray()
    encode_hello(out)
    encode_hello(out, 4096)
    encode_hello(out, 2**40)  # no u32 limit: stated as the largest length there is
    request, answer, unlimited = FrameReader().feed(out)
    assert request == Frame(HELLO, 0, 0, b"")
    assert hello_problem(request, first=True) is None
    assert decode_hello(answer) == 4096
    assert decode_hello(unlimited) == 2**32 - 1
    with pytest.raises(ProtocolError, match="bad HELLO answer"):
        decode_hello(request)
    with pytest.raises(ProtocolError, match="bad HELLO answer"):
        decode_hello(replace(answer, kind=REPLY))
    assert hello_problem(request, first=False) == "HELLO after the first frame"
    assert "carries nothing" in str(hello_problem(answer, first=True))
    assert "carries nothing" in str(hello_problem(replace(request, count=1), first=True))


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        (Frame(REQUEST, 2, 1, b"ab"), None),
        (Frame(REQUEST, 2, 1, b"", skipped=5000), None),  # skipped bytes count as its payload
        (Frame(REPLY, 1, 1, b"a"), "expected REQUEST frames, got kind 2"),
        (Frame(REQUEST, 3, 1, b"ab"), "REQUEST frame says 3 requests in 2 bytes"),
        (Frame(REQUEST, 2, 2**64 - 1, b"ab"), "REQUEST ids 18446744073709551615+2 pass 2**64"),
        (Frame(REQUEST, 0, 1, b"", skipped=5000), "REQUEST frame says 0 requests but carries 5000 bytes"),
    ],
)
def test_request_problem_names_what_breaks_the_stream(frame: Frame, problem: str | None) -> None:
    assert request_problem(frame) == problem


def test_framing_problem_names_what_does_not_add_up() -> None:
    frame = Frame(REQUEST, 3, 1, b"abcdefgh")
    assert framing_problem(frame, 3, 6) == "frame has 2 unused bytes after its 3 requests"
    left_over = "frame holds 2 whole requests (2 bytes left over), its header says 3"
    assert framing_problem(frame, 2, 6) == left_over
    assert framing_problem(frame, 2, 8) == "frame holds 2 whole requests, its header says 3"


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
