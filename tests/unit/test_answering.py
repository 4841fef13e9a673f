"""Answering without a connection: bytes in, REQUEST frames out, replies appended to bytes."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest

from railcar.apps.increment import increment_service
from railcar.codecs import RECORD_276, codec_factory
from railcar.proto.reqrep import (
    ERROR,
    HEADER,
    HELLO,
    REPLY,
    REQUEST,
    Frame,
    FrameReader,
    append_frame,
    decode_errors,
    decode_hello,
    encode_hello,
)
from railcar.reqrep import Mode
from railcar.reqrep.answering import Answerer, Session


def session(max_frame: int = 4096) -> Session:
    return Session(FrameReader(max_frame, frozenset({REQUEST})), codec_factory("int32")())


def request(first_id: int, *numbers: int) -> bytes:
    out = bytearray()
    append_frame(out, REQUEST, len(numbers), first_id, struct.pack(f"<{len(numbers)}i", *numbers))
    return bytes(out)


def test_receive_answers_an_opening_hello_and_fails_an_oversized_frame() -> None:
    hello = bytearray()
    encode_hello(hello)
    oversized = request(2, *range(2000))  # 8 kB of requests
    reading, out = session(), bytearray()
    frames, error = reading.receive(bytes(hello) + request(1, 5) + oversized + request(2002, 6), out)
    assert error is None
    assert [(f.first_id, f.count) for f in frames] == [(1, 1), (2002, 1)]
    answer, failed = FrameReader().feed(out)
    assert (answer.kind, decode_hello(answer)) == (HELLO, 4096)
    assert decode_errors(failed) == [
        (2, 2000, "request frame of 8013 bytes is over the server's limit of 4096 bytes")
    ]
    assert reading.failed == 2000


def test_receive_returns_the_frames_before_the_one_that_breaks_the_stream() -> None:
    reading, out = session(), bytearray()
    frames, error = reading.receive(request(1, 5) + HEADER.pack(13, HELLO, 0, 0) + request(2, 6), out)
    assert [f.first_id for f in frames] == [1]
    assert str(error) == "HELLO after the first frame"
    assert out == b""


def test_array_mode_calls_the_service_once_per_read_and_replies_frame_by_frame() -> None:
    calls: list[int] = []

    def increment(numbers: Any) -> Any:
        calls.append(len(numbers))
        return numbers + np.int32(1)

    frames = [
        Frame(REQUEST, 2, 1, struct.pack("<2i", 1, 2)),
        Frame(REQUEST, 2, 3, b"\x00" * 5),  # not two int32
        Frame(REQUEST, 1, 5, struct.pack("<i", 3)),
    ]
    out = bytearray()
    Answerer(increment, "array").answer(session(), frames, out)
    replies = FrameReader().feed(out)
    assert calls == [3]
    assert [(f.kind, f.first_id, f.payload) for f in replies if f.kind == REPLY] == [
        (REPLY, 1, struct.pack("<2i", 2, 3)),
        (REPLY, 5, struct.pack("<i", 4)),
    ]
    assert [(first, count) for f in replies if f.kind == ERROR for first, count, _ in decode_errors(f)] == [
        (3, 2)
    ]


@pytest.mark.parametrize("mode", ["item", "batch", "array"])
@pytest.mark.parametrize("codec", ["int32", "struct276"])
def test_the_demo_service_fails_a_reply_that_would_overflow_in_every_mode(codec: str, mode: Mode) -> None:
    # int32 2**31 - 1 plus one, struct276 flags (uint32) 0xFFFFFFFF plus one: numpy would wrap to
    # the smallest value in array mode and answer a normal reply.
    if codec == "int32":
        payload = struct.pack("<i", 2**31 - 1)
    else:
        records = np.zeros(1, dtype=RECORD_276)
        records["flags"] = 0xFFFFFFFF
        payload = records.tobytes()
    reading = Session(FrameReader(4096, frozenset({REQUEST})), codec_factory(codec)())
    out = bytearray()
    Answerer(increment_service(codec, mode), mode).answer(reading, [Frame(REQUEST, 1, 7, payload)], out)
    (answer,) = FrameReader().feed(out)
    assert answer.kind == ERROR
    ((first_id, count, reason),) = decode_errors(answer)
    assert (first_id, count) == (7, 1)
    assert reason.startswith("cannot encode reply") or "would overflow" in reason, reason
