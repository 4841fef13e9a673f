"""Any split of a pipelined request stream into reads gives the same commands, on every parser."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from railcar.proto.resp import PARSERS, AnyParser, RespProtocolError, encode_command, new_parser

args = st.lists(st.binary(max_size=40), min_size=1, max_size=6)
inline = st.lists(st.text(alphabet="abcXYZ019:_-", min_size=1, max_size=10), min_size=1, max_size=4)
requests = st.lists(
    st.one_of(args.map(lambda a: ("array", a)), inline.map(lambda a: ("inline", a))), max_size=20
)


def wire_of(request: tuple[str, list[bytes] | list[str]]) -> tuple[bytes, list[bytes]]:
    kind, parts = request
    if kind == "array":
        raw = [p for p in parts if isinstance(p, bytes)]
        return encode_command(*raw), raw
    words = [str(p).encode() for p in parts]
    return b" ".join(words) + b"\r\n", words


@settings(max_examples=300, deadline=None)
@given(stream=requests, cuts=st.lists(st.integers(0, 5000), max_size=30), kind=st.sampled_from(PARSERS))
def test_any_chunking_gives_the_same_commands(
    stream: list[tuple[str, list[bytes] | list[str]]], cuts: list[int], kind: str
) -> None:
    wires = [wire_of(r) for r in stream]
    wire = b"".join(w for w, _ in wires)
    expected = [c for _, c in wires]
    parser = new_parser(kind=kind)
    bounds = sorted({0, len(wire), *(c % (len(wire) + 1) for c in cuts)})
    got = []
    for start, end in itertools.pairwise(bounds):
        parser.feed(wire[start:end])
        while (command := parser.next_command()) is not None:
            got.append(command)
    assert got == expected
    assert parser.buffered == 0


def outcome(parser: AnyParser, wire: bytes, bounds: list[int]) -> tuple[list[list[bytes]], str]:
    got: list[list[bytes]] = []
    try:
        for start, end in itertools.pairwise(bounds):
            parser.feed(wire[start:end])
            while (command := parser.next_command()) is not None:
                got.append(command)
    except RespProtocolError as exc:
        return got, str(exc)
    return got, f"pending {parser.buffered}"


pieces = st.one_of(
    args.map(lambda a: encode_command(*a)),
    st.sampled_from(
        [b"*", b"$", b"+OK", b":1", b"=4\r\ntxt:", b"(1", b"~1", b">1", b"|1", b"%1", b"\r\n", b"\0", b"-1"]
    ),
    st.binary(max_size=6),
)


@settings(max_examples=500, deadline=None)
@given(parts=st.lists(pieces, max_size=12), cuts=st.lists(st.integers(0, 5000), max_size=6))
# An inline line Redis holds as unterminated (a NUL before its CRLF) after a long request the
# Python parser finished: it was handed to hiredis, which read it as something else.
@example(parts=[b"+OK", b":1", encode_command(b"", b"", b"\x01\x01", b"#\x00\r\n"), b"**:1:1"], cuts=[267])
@pytest.mark.parametrize("kind", ["hiredis", "c"])
def test_fast_parsers_agree_with_the_python_parser_on_any_bytes(
    kind: str, parts: list[bytes], cuts: list[int]
) -> None:
    wire = b"".join(parts)
    bounds = sorted({0, len(wire), *(c % (len(wire) + 1) for c in cuts)})
    assert outcome(new_parser(kind=kind), wire, bounds) == outcome(new_parser(kind="python"), wire, bounds)


def taken(wire: bytes, bounds: list[int]) -> tuple[list[list[bytes]], str]:
    """What take_ready hands over for the same reads: every non-empty command, then the error."""
    parser = new_parser(kind="c")
    got: list[list[bytes]] = []
    try:
        for start, end in itertools.pairwise(bounds):
            parser.feed(wire[start:end])
            got += parser.take_ready()
        got += parser.take_ready()  # a request before an error came in the same read: now the error
    except RespProtocolError as exc:
        return got, str(exc)
    return got, f"pending {parser.buffered}"


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(pieces, max_size=12), cuts=st.lists(st.integers(0, 5000), max_size=6))
def test_take_ready_agrees_with_next_command(parts: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(parts)
    bounds = sorted({0, len(wire), *(c % (len(wire) + 1) for c in cuts)})
    commands, end = outcome(new_parser(kind="python"), wire, bounds)
    assert taken(wire, bounds) == ([c for c in commands if c], end)
