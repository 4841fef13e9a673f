"""kvbin: any split of a request or reply stream into reads gives the same events."""

from __future__ import annotations

import itertools

from hypothesis import example, given
from hypothesis import strategies as st

from railcar.errors import ProtocolError
from railcar.proto.kvbin import (
    GET,
    SET,
    STATUSES,
    Reply,
    ReplyParser,
    Request,
    RequestParser,
    encode_reply,
    encode_request,
)

keys = st.binary(max_size=30)
requests = st.lists(
    st.one_of(
        keys.map(lambda key: Request(GET, key, b"")),
        st.tuples(keys, st.binary(max_size=60)).map(lambda kv: Request(SET, *kv)),
    ),
    max_size=20,
)


def events(parser: RequestParser, wire: bytes, bounds: list[int]) -> list[object]:
    """Every request parsed, then the error text if the stream broke the protocol."""
    got: list[object] = []
    for start, end in itertools.pairwise(bounds):
        got.extend(parser.feed(memoryview(wire)[start:end]))
    if parser.error is not None:
        got.append(str(parser.error))
    return got


def cut(wire: bytes, cuts: list[int]) -> list[int]:
    return sorted({0, len(wire), *(c % (len(wire) + 1) for c in cuts)})


@given(stream=requests, garbage=st.binary(max_size=12), cuts=st.lists(st.integers(0, 5000), max_size=30))
@example(stream=[], garbage=b"\x07", cuts=[])
@example(stream=[Request(SET, b"k", b"v")], garbage=b"\x01\x00\x01\x00\x02k", cuts=[3, 9])
def test_any_split_gives_the_same_requests_and_error(
    stream: list[Request], garbage: bytes, cuts: list[int]
) -> None:
    wire = b"".join(encode_request(*request) for request in stream) + garbage
    whole = events(RequestParser(), wire, [0, len(wire)])
    assert whole[: len(stream)] == stream
    assert events(RequestParser(), wire, cut(wire, cuts)) == whole


@given(stream=requests, cuts=st.lists(st.integers(0, 5000), max_size=30))
def test_valid_requests_leave_nothing_buffered(stream: list[Request], cuts: list[int]) -> None:
    wire = b"".join(encode_request(*request) for request in stream)
    parser = RequestParser()
    assert events(parser, wire, cut(wire, cuts)) == stream
    assert parser.buffered == 0


replies = st.lists(
    st.tuples(st.sampled_from(sorted(STATUSES)), st.binary(max_size=60)).map(lambda r: Reply(*r)), max_size=20
)


@given(stream=replies, cuts=st.lists(st.integers(0, 5000), max_size=30))
def test_any_split_gives_the_same_replies(stream: list[Reply], cuts: list[int]) -> None:
    out = bytearray()
    for reply in stream:
        encode_reply(reply.status, reply.body, out)
    wire = bytes(out)
    parser = ReplyParser()
    got: list[Reply] = []
    for start, end in itertools.pairwise(cut(wire, cuts)):
        got.extend(parser.feed(wire[start:end]))
    assert got == stream
    assert parser.buffered == 0


@given(garbage=st.binary(min_size=1, max_size=40))
def test_reply_garbage_raises_only_protocol_error(garbage: bytes) -> None:
    try:
        ReplyParser().feed(garbage)
    except ProtocolError:
        pass
