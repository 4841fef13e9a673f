"""HTTP/1.1 response framing: any split gives the same statuses; garbage raises only ProtocolError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from railcar.errors import ProtocolError
from railcar.proto.http1_client import ResponseReader, request


def fixed(status: int, body: bytes) -> bytes:
    return b"HTTP/1.1 %d X\r\nContent-Length: %d\r\nServer: t\r\n\r\n%s" % (status, len(body), body)


def chunked(status: int, chunks: list[bytes]) -> bytes:
    out = b"HTTP/1.1 %d OK\r\nTransfer-Encoding: chunked\r\n\r\n" % status
    for chunk in chunks:
        out += b"%x;ext=1\r\n%s\r\n" % (len(chunk), chunk)
    return out + b"0\r\nTrailer: yes\r\n\r\n"


responses = st.one_of(
    st.builds(fixed, st.sampled_from([200, 201, 404, 500]), st.binary(max_size=300)),
    st.builds(chunked, st.sampled_from([200, 503]), st.lists(st.binary(min_size=1, max_size=99), max_size=4)),
    st.sampled_from(
        [
            b"HTTP/1.1 204 No Content\r\nContent-Length: 99\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            b"HTTP/1.1 304 Not Modified\r\n\r\n",
        ]
    ),
)


def statuses_of(response: bytes) -> list[int]:
    return ResponseReader().feed(response)


@given(st.lists(responses, min_size=1, max_size=6), st.lists(st.integers(min_value=1, max_value=64)))
def test_any_split_gives_the_same_statuses(items: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(items)
    expected = [status for item in items for status in statuses_of(item)]
    reader = ResponseReader()
    got: list[int] = []
    position = 0
    for size in [*cuts, len(stream)]:
        got += reader.feed(stream[position : position + size])
        position += size
    assert got == expected
    assert reader.eof() == []


@given(st.binary(max_size=200))
def test_garbage_raises_only_protocol_error(garbage: bytes) -> None:
    reader = ResponseReader()
    try:
        reader.feed(garbage)
        reader.eof()
    except ProtocolError:
        pass


def test_connection_close_and_a_body_delimited_by_close() -> None:
    reader = ResponseReader()
    assert reader.feed(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx") == [200]
    assert reader.closing
    reader = ResponseReader()
    assert reader.feed(b"HTTP/1.0 200 OK\r\n\r\nbody until close") == []
    assert reader.closing
    assert reader.eof() == [200]


@pytest.mark.parametrize(
    "bad",
    [
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxyz",
    ],
)
def test_bad_framing_is_a_protocol_error(bad: bytes) -> None:
    with pytest.raises(ProtocolError):
        ResponseReader().feed(bad)


def test_cut_short_at_close_is_a_protocol_error() -> None:
    reader = ResponseReader()
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    with pytest.raises(ProtocolError):
        reader.eof()


def test_oversized_head_is_refused() -> None:
    with pytest.raises(ProtocolError, match="longer than"):
        ResponseReader().feed(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 20_000)


def test_request_encoding() -> None:
    assert request("GET", "/a", "h") == b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"


def test_a_large_body_is_consumed_not_held() -> None:
    reader = ResponseReader()
    assert reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 3000000\r\n\r\n") == []
    for _ in range(2):
        assert reader.feed(bytes(1_000_000)) == []
        assert not reader._buf
    assert reader.feed(bytes(1_000_000)) == [200]
    reader = ResponseReader()
    assert reader.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100000\r\n") == []
    assert reader.feed(bytes(0x100000 - 10)) == []
    assert not reader._buf
    assert reader.feed(bytes(10) + b"\r\n0\r\n\r\n") == [200]
