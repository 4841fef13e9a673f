"""kvbin's framing: what is encoded, what is refused, and where a malformed stream stops."""

from __future__ import annotations

import pytest

from railcar.errors import ProtocolError
from railcar.proto.kvbin import (
    ERROR,
    GET,
    MAX_LENGTH,
    NOT_FOUND_REPLY,
    OK,
    OK_REPLY,
    SET,
    Reply,
    ReplyParser,
    Request,
    RequestParser,
    encode_reply,
    encode_request,
)


def test_requests_and_replies_are_big_endian_lengths() -> None:
    assert encode_request(SET, b"key", b"value") == b"\x02\x00\x03\x00\x05keyvalue"
    assert encode_request(GET, b"key") == b"\x01\x00\x03\x00\x00key"
    out = bytearray()
    encode_reply(OK, b"value", out)
    assert out == b"\x00\x00\x05value"
    assert OK_REPLY == b"\x00\x00\x00"
    assert NOT_FOUND_REPLY == b"\x01\x00\x00"


@pytest.mark.parametrize(
    ("op", "key", "value", "needle"),
    [
        (9, b"k", b"", "unknown kvbin opcode 9"),
        (GET, b"k", b"v", "GET carries no value"),
        (SET, b"k" * (MAX_LENGTH + 1), b"", "at most 65535"),
        (SET, b"k", b"v" * (MAX_LENGTH + 1), "at most 65535"),
    ],
)
def test_encoding_refuses_what_the_wire_cannot_carry(op: int, key: bytes, value: bytes, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        encode_request(op, key, value)


def test_reply_encoding_refuses_unknown_status_and_long_body() -> None:
    with pytest.raises(ValueError, match="unknown kvbin status"):
        encode_reply(99, b"", bytearray())
    with pytest.raises(ValueError, match="at most 65535"):
        encode_reply(OK, b"x" * (MAX_LENGTH + 1), bytearray())


def test_a_pipeline_in_one_read_parses_every_request() -> None:
    wire = encode_request(SET, b"a", b"1") + encode_request(GET, b"a") + encode_request(SET, b"", b"")
    assert RequestParser().feed(wire) == [
        Request(SET, b"a", b"1"),
        Request(GET, b"a", b""),
        Request(SET, b"", b""),
    ]


def test_unknown_opcode_stops_after_the_requests_before_it() -> None:
    parser = RequestParser()
    assert parser.feed(encode_request(GET, b"a") + b"\x05\x00") == [Request(GET, b"a", b"")]
    assert str(parser.error) == "unknown opcode 5"
    assert parser.feed(encode_request(GET, b"b")) == []  # nothing after a malformed request


def test_get_with_a_value_is_malformed_once_its_header_is_whole() -> None:
    parser = RequestParser()
    assert parser.feed(b"\x01\x00\x01\x00") == []
    assert parser.error is None
    assert parser.feed(b"\x02kvv") == []
    assert str(parser.error) == "GET with a 2-byte value"
    assert parser.buffered == 0


def test_reply_parser_refuses_an_unknown_status() -> None:
    parser = ReplyParser()
    assert parser.feed(b"\x00\x00\x02hi\x01\x00") == [Reply(OK, b"hi")]
    assert parser.feed(b"\x00") == [Reply(1, b"")]
    with pytest.raises(ProtocolError, match="unknown kvbin status 7"):
        parser.feed(b"\x07")
    assert Reply(ERROR, b"x") == (ERROR, b"x")
