"""The NATS protocol core: every server operation parsed, every client operation encoded, limits kept."""

from __future__ import annotations

import pytest

from railcar.errors import ProtocolError
from railcar.proto.nats import (
    OK,
    PING,
    PONG,
    BadMessage,
    Err,
    Headers,
    Info,
    InvalidHeader,
    InvalidSubject,
    Msg,
    Parser,
    connect_op,
    header_block,
    hpub_op,
    parse_headers,
    pub_op,
    queue_bytes,
    sub_op,
    subject_bytes,
    unsub_op,
)


def parse(data: bytes, **limits: int) -> list[object]:
    return list(Parser(**limits).feed(data))


def test_info_is_parsed_json() -> None:
    (info,) = parse(b'INFO {"server_id":"x","max_payload":1048576,"headers":true}\r\n')
    assert isinstance(info, Info)
    assert info.options == {"server_id": "x", "max_payload": 1048576, "headers": True}


def test_msg_with_and_without_reply() -> None:
    events = parse(b"MSG foo.bar 7 5\r\nhello\r\nMSG a 1 _INBOX.x 0\r\n\r\n")
    assert events == [Msg(b"foo.bar", 7, b"", b"hello"), Msg(b"a", 1, b"_INBOX.x", b"")]
    first, second = events
    assert isinstance(first, Msg)
    assert isinstance(second, Msg)
    assert (first.subject, first.reply, first.headers) == ("foo.bar", "", None)
    assert second.reply == "_INBOX.x"


def test_payload_may_hold_crlf() -> None:
    assert parse(b"MSG s 1 6\r\na\r\nb\r\n\r\n") == [Msg(b"s", 1, b"", b"a\r\nb\r\n")]


def test_hmsg_headers_repeated_names_and_payload() -> None:
    block = b"NATS/1.0\r\nA: 1\r\nA: 2\r\nB:  x y \r\n\r\n"
    line = b"HMSG s 3 r %d %d\r\n" % (len(block), len(block) + 2)
    (msg,) = parse(line + block + b"hi\r\n")
    assert isinstance(msg, Msg)
    assert msg.headers is not None
    assert msg.data == b"hi"
    assert msg.reply == "r"
    assert msg.sid == 3
    assert msg.headers.get_all("A") == ["1", "2"]
    assert msg.headers["A"] == "1"
    assert msg.headers["B"] == "x y"
    assert "B" in msg.headers
    assert "C" not in msg.headers
    assert list(msg.headers) == ["A", "B"]
    assert msg.headers.status is None
    with pytest.raises(KeyError):
        msg.headers["C"]


def test_hmsg_no_responders_status() -> None:
    block = b"NATS/1.0 503\r\n\r\n"
    (msg,) = parse(b"HMSG _INBOX.a.b 2 %d %d\r\n%b\r\n" % (len(block), len(block), block))
    assert isinstance(msg, Msg)
    assert msg.headers is not None
    assert (msg.headers.status, msg.headers.description, msg.data) == (503, "", b"")
    headers = parse_headers(b"NATS/1.0 408 Request Timeout\r\n\r\n")
    assert (headers.status, headers.description) == (408, "Request Timeout")


def test_control_ops() -> None:
    assert parse(b"PING\r\nPONG\r\n+OK\r\n-ERR 'Authorization Violation'\r\n") == [
        PING,
        PONG,
        OK,
        Err("Authorization Violation"),
    ]


def test_lowercase_ops_are_accepted() -> None:
    assert parse(b"ping\r\nmsg s 1 1\r\nx\r\n") == [PING, Msg(b"s", 1, b"", b"x")]


def test_incomplete_input_waits() -> None:
    parser = Parser()
    assert parser.feed(b"MSG s 1 11\r\nhel") == []
    assert parser.buffered == 3
    assert parser.feed(b"lo worl") == []
    assert parser.feed(b"d\r") == []
    assert parser.feed(b"\nPI") == [Msg(b"s", 1, b"", b"hello world")]
    assert parser.buffered == 2
    assert parser.feed(b"NG\r\n") == [PING]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"BOGUS\r\n", "unknown operation"),
        (b"MSG s x 1\r\na\r\n", "malformed MSG"),
        (b"MSG s 1\r\n", "malformed MSG"),
        (b"MSG s 1 -1\r\n", "malformed MSG"),
        (b"HMSG s 1 5 2\r\n", "malformed HMSG"),
        (b"MSG s 1 1\r\nab\r\n", "not followed by CRLF"),
        (b"INFO {nope\r\n", "INFO is not JSON"),
        (b"INFO [1]\r\n", "not a JSON object"),
    ],
)
def test_broken_streams(data: bytes, words: str) -> None:
    with pytest.raises(ProtocolError, match=words):
        parse(data)


def test_control_line_limit_without_crlf() -> None:
    parser = Parser(max_control_line=64)
    assert parser.feed(b"MSG " + b"x" * 50) == []
    with pytest.raises(ProtocolError, match="control line of over 64 bytes"):
        parser.feed(b"y" * 20)


def test_control_line_limit_with_crlf() -> None:
    with pytest.raises(ProtocolError, match="control line of over 64 bytes"):
        parse(b"INFO {" + b" " * 100 + b"}\r\n", max_control_line=64)


def test_payload_limit_is_checked_from_the_line() -> None:
    parser = Parser(max_payload=100)
    with pytest.raises(ProtocolError, match="MSG payload of 101 bytes is over the limit of 100"):
        parser.feed(b"MSG s 1 101\r\n")
    with pytest.raises(ProtocolError, match="HMSG payload of 200 bytes is over the limit of 100"):
        Parser(max_payload=100).feed(b"HMSG s 1 12 200\r\n")


def test_large_payload_in_many_chunks_is_buffered_as_parts() -> None:
    parser = Parser()
    payload = bytes(range(256)) * 4096  # 1 MiB
    assert parser.feed(b"MSG big 9 %d\r\n" % len(payload)) == []
    for i in range(0, len(payload), 1000):
        assert parser.feed(payload[i : i + 1000]) == []
    assert parser.buffered == len(payload)
    assert parser.feed(b"\r\nPONG\r\n") == [Msg(b"big", 9, b"", payload), PONG]
    assert parser.buffered == 0


# -- encoding ----------------------------------------------------------------------------


def test_connect_is_json() -> None:
    op = connect_op({"verbose": False, "name": "x"})
    assert op == b'CONNECT {"verbose":false,"name":"x"}\r\n'


def test_pub_and_hpub() -> None:
    assert pub_op(b"a.b", b"hi") == b"PUB a.b 2\r\nhi\r\n"
    assert pub_op(b"a.b", b"hi", b"r") == b"PUB a.b r 2\r\nhi\r\n"
    block = header_block({"K": "v", "M": ["1", "2"]})
    assert block == b"NATS/1.0\r\nK: v\r\nM: 1\r\nM: 2\r\n\r\n"
    assert hpub_op(b"s", block, b"xy") == b"HPUB s %d %d\r\n%bxy\r\n" % (len(block), len(block) + 2, block)
    assert hpub_op(b"s", block, b"", b"r").startswith(b"HPUB s r %d %d\r\n" % (len(block), len(block)))


def test_header_block_round_trips_with_status() -> None:
    headers = Headers([("A", "1"), ("A", "2")], status=503, description="No Responders")
    assert parse_headers(header_block(headers)) == headers


@pytest.mark.parametrize(("name", "value"), [("", "v"), ("a b", "v"), ("a:b", "v"), ("k", "x\r\ny")])
def test_bad_headers_are_refused(name: str, value: str) -> None:
    with pytest.raises(InvalidHeader):
        header_block({name: value})


def test_sub_unsub() -> None:
    assert sub_op(b"foo.*", 3) == b"SUB foo.* 3\r\n"
    assert sub_op(b"foo.>", 4, b"workers") == b"SUB foo.> workers 4\r\n"
    assert unsub_op(3) == b"UNSUB 3\r\n"
    assert unsub_op(3, 10) == b"UNSUB 3 10\r\n"


@pytest.mark.parametrize("subject", ["", " ", "a b", "a\tb", "a\r\nPUB x", ".a", "a.", "a..b", "."])
def test_invalid_subjects(subject: str) -> None:
    with pytest.raises(InvalidSubject):
        subject_bytes(subject)


@pytest.mark.parametrize("subject", ["a", "a.b", "a.*.c", "a.>", "_INBOX.x.y", "ünïcode.ok"])
def test_valid_subjects(subject: str) -> None:
    assert subject_bytes(subject) == subject.encode()


def test_queue_names() -> None:
    assert queue_bytes("workers") == b"workers"
    with pytest.raises(InvalidSubject):
        queue_bytes("a b")
    with pytest.raises(InvalidSubject):
        queue_bytes("")


def test_a_bad_header_block_loses_its_message_not_the_stream() -> None:
    bad = parse(b"HMSG s 1 4 4\r\nABCD\r\nHMSG t 2 20 20\r\nNATS/1.0\r\nno-colon\r\n\r\nMSG u 3 1\r\nx\r\n")
    assert bad[0] == BadMessage(b"s", 1, "header block does not start with NATS/1.0: 'ABCD'")
    assert bad[1] == BadMessage(b"t", 2, "bad header line 'no-colon'")
    assert bad[2] == Msg(b"u", 3, b"", b"x")
