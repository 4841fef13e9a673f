"""RESP requests parsed the way Redis 7.0 parses them, by every parser; replies encoded for RESP2/3."""

from __future__ import annotations

import pytest

from railcar.proto.resp import (
    NULL_ARRAY,
    OK,
    PARSERS,
    AnyParser,
    Error,
    RequestParser,
    RespProtocolError,
    Verbatim,
    encode_command,
    encode_reply,
    new_parser,
    split_inline,
    string_to_int,
)

Parser = AnyParser


@pytest.fixture(params=PARSERS)
def parser(request: pytest.FixtureRequest) -> Parser:
    return new_parser(kind=request.param)


def drain(parser: Parser) -> list[list[bytes]]:
    commands = []
    while (command := parser.next_command()) is not None:
        commands.append(command)
    return commands


def test_pipelined_arrays_and_inline_commands(parser: Parser) -> None:
    parser.feed(
        encode_command("SET", "k", "v")
        + b"PING\r\n"
        + encode_command("GET", "k")
        + b"echo  'a b' \"c\\x41\\n\"\n"
    )
    assert drain(parser) == [[b"SET", b"k", b"v"], [b"PING"], [b"GET", b"k"], [b"echo", b"a b", b"cA\n"]]
    assert parser.buffered == 0


def test_partial_request_waits_for_the_rest(parser: Parser) -> None:
    wire = encode_command("SET", "key", "x" * 100)
    parser.feed(wire[:30])
    assert drain(parser) == []
    parser.feed(wire[30:] + encode_command("GET", "key")[:5])
    assert drain(parser) == [[b"SET", b"key", b"x" * 100]]
    parser.feed(encode_command("GET", "key")[5:])
    assert drain(parser) == [[b"GET", b"key"]]


def test_empty_arrays_and_blank_lines_are_empty_commands(parser: Parser) -> None:
    parser.feed(b"*0\r\n*-1\r\n\r\n   \r\n")
    assert [c for c in drain(parser) if c] == []


def test_bulk_terminator_is_skipped_not_checked_as_redis_does(parser: Parser) -> None:
    parser.feed(b"*1\r\n$4\r\nPINGxx*1\r\n$4\r\nPING\r\n")
    assert drain(parser) == [[b"PING"], [b"PING"]]


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"*1\r\n+PING\r\n", "Protocol error: expected '$', got '+'"),
        (b"*2\r\n$3\r\nGET\r\n:1\r\n", "Protocol error: expected '$', got ':'"),
        (b"*1\r\n*1\r\n$4\r\nPING\r\n", "Protocol error: expected '$', got '*'"),
        (b"*1\r\n=8\r\ntxt:PING\r\n", "Protocol error: expected '$', got '='"),
        (b"*1\r\n\r\n", "Protocol error: expected '$', got ' '"),
        (b"*x\r\n", "Protocol error: invalid multibulk length"),
        (b"*+1\r\n", "Protocol error: invalid multibulk length"),
        (b"*01\r\n", "Protocol error: invalid multibulk length"),
        (b"*2147483648\r\n", "Protocol error: invalid multibulk length"),
        (b"*1\r\n$-1\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$536870913\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$abc\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$" + b"1" * 70000, "Protocol error: too big bulk count string"),
        (b"*" + b"1" * 70000, "Protocol error: too big mbulk count string"),
        (b"GET " + b"k" * 70000, "Protocol error: too big inline request"),
        (b'GET "unterminated\r\n', "Protocol error: unbalanced quotes in request"),
        (b'GET "a"b\r\n', "Protocol error: unbalanced quotes in request"),
    ],
)
def test_protocol_errors_have_redis_texts(parser: Parser, wire: bytes, message: str) -> None:
    parser.feed(encode_command("PING") + wire)
    assert parser.next_command() == [b"PING"]  # what came before the error is still served
    with pytest.raises(RespProtocolError) as caught:
        drain(parser)
    assert str(caught.value) == message


def test_a_nul_byte_hides_a_line_end_as_strchr_does_in_redis(parser: Parser) -> None:
    parser.feed(b"PING\0\r\n")
    assert drain(parser) == []  # Redis waits for a line end until the 64 KiB limit
    parser.feed(b"x" * 70_000)
    with pytest.raises(RespProtocolError, match="too big inline request"):
        drain(parser)


def test_error_quotes_a_raw_byte(parser: Parser) -> None:
    parser.feed(b"*1\r\n\x80\r\n")
    with pytest.raises(RespProtocolError) as caught:
        drain(parser)
    assert Error(f"ERR {caught.value}").encoded == b"-ERR Protocol error: expected '$', got '\x80'\r\n"


def test_bulk_of_exactly_512_mib_header_is_accepted(parser: Parser) -> None:
    parser.feed(b"*1\r\n$536870912\r\nabc")
    assert drain(parser) == []


def test_unauthenticated_limits(parser: Parser) -> None:
    parser.authenticated = False
    parser.feed(encode_command(*["x"] * 10))
    assert drain(parser) == [[b"x"] * 10]
    parser.feed(b"*11\r\n")
    with pytest.raises(RespProtocolError, match=r"^Protocol error: unauthenticated multibulk length$"):
        drain(parser)
    other: Parser = type(parser)()
    other.authenticated = False
    other.feed(b"*1\r\n$16385\r\n")
    with pytest.raises(RespProtocolError, match=r"^Protocol error: unauthenticated bulk length$"):
        drain(other)


def test_query_buffer_is_bounded(parser: Parser) -> None:
    small: Parser = type(parser)(max_buffer=1000)
    small.feed(b"*1\r\n$5000\r\n")
    with pytest.raises(RespProtocolError, match="query buffer"):
        small.feed(b"x" * 1000)


def test_take_ready_gives_every_complete_request_then_the_error() -> None:
    parser = new_parser(kind="c")
    parser.feed(encode_command("SET", "k", "v") + b"*0\r\n" + encode_command("GET", "k") + b"*1\r\n$x\r\n")
    assert parser.take_ready() == [[b"SET", b"k", b"v"], [b"GET", b"k"]]  # the empty array skipped
    with pytest.raises(RespProtocolError, match=r"^Protocol error: invalid bulk length$"):
        parser.take_ready()


def test_put_back_requests_come_first_in_order() -> None:
    parser = new_parser(kind="c")
    parser.feed(encode_command("A") + encode_command("B") + encode_command("C"))
    first, *rest = parser.take_ready()
    parser.put_back(rest)
    parser.put_back([first])
    assert parser.next_command() == [b"A"]
    parser.feed(encode_command("D"))
    assert parser.take_ready() == [[b"B"], [b"C"], [b"D"]]
    assert parser.take_ready() == []


def test_unknown_or_missing_parser_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="parser must be"):
        new_parser(kind="fast")


def test_a_long_array_over_many_reads_is_parsed_once() -> None:
    parser = RequestParser()
    wire = encode_command(*[b"v%d" % i for i in range(5000)])
    for start in range(0, len(wire), 1000):
        parser.feed(wire[start : start + 1000])
        command = parser.next_command()
    assert command is not None
    assert len(command) == 5000


def test_string_to_int_is_redis_strict() -> None:
    assert string_to_int(b"-9223372036854775808") == -(2**63)
    for bad in (b"", b"+1", b"01", b"-0", b"9223372036854775808", b" 1", b"1 ", b"1.0", b"-"):
        assert string_to_int(bad) is None


def test_split_inline_like_sdssplitargs() -> None:
    assert split_inline(b"set a 'it\\'s'") == [b"set", b"a", b"it's"]
    assert split_inline(b'a"b c" d') == [b"ab c", b"d"]
    assert split_inline(b'a"b c"d') is None
    assert split_inline(b'"\\t\\r\\z"') == [b"\t\rz"]
    assert split_inline(b"a\0b") == [b"a"]
    assert split_inline(b"'open") is None


@pytest.mark.parametrize(
    ("value", "resp2", "resp3"),
    [
        (b"ab", b"$2\r\nab\r\n", b"$2\r\nab\r\n"),
        (None, b"$-1\r\n", b"_\r\n"),
        (NULL_ARRAY, b"*-1\r\n", b"_\r\n"),
        (OK, b"+OK\r\n", b"+OK\r\n"),
        (Error("ERR bad\r\nthing"), b"-ERR bad  thing\r\n", b"-ERR bad  thing\r\n"),
        (12345, b":12345\r\n", b":12345\r\n"),
        (-1, b":-1\r\n", b":-1\r\n"),
        (True, b":1\r\n", b"#t\r\n"),
        (1.5, b"$3\r\n1.5\r\n", b",1.5\r\n"),
        ([b"a", 1, None], b"*3\r\n$1\r\na\r\n:1\r\n$-1\r\n", b"*3\r\n$1\r\na\r\n:1\r\n_\r\n"),
        ({b"k": b"v"}, b"*2\r\n$1\r\nk\r\n$1\r\nv\r\n", b"%1\r\n$1\r\nk\r\n$1\r\nv\r\n"),
        ({b"m"}, b"*1\r\n$1\r\nm\r\n", b"~1\r\n$1\r\nm\r\n"),
        (Verbatim(b"hi"), b"$2\r\nhi\r\n", b"=6\r\ntxt:hi\r\n"),
    ],
)
def test_reply_encoding(value: object, resp2: bytes, resp3: bytes) -> None:
    for resp3_on, expected in ((False, resp2), (True, resp3)):
        out = bytearray()
        encode_reply(value, out, resp3_on)
        assert bytes(out) == expected


def test_unknown_reply_type_is_refused() -> None:
    with pytest.raises(TypeError):
        encode_reply(object(), bytearray())
