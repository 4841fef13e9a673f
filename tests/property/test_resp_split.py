"""Any split of a pipelined request stream into reads gives the same commands, on both parsers."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from railcar.proto.resp import HiredisRequestParser, RequestParser, encode_command

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
@given(stream=requests, cuts=st.lists(st.integers(0, 5000), max_size=30), hiredis=st.booleans())
def test_any_chunking_gives_the_same_commands(
    stream: list[tuple[str, list[bytes] | list[str]]], cuts: list[int], hiredis: bool
) -> None:
    wires = [wire_of(r) for r in stream]
    wire = b"".join(w for w, _ in wires)
    expected = [c for _, c in wires]
    parser = HiredisRequestParser() if hiredis else RequestParser()
    bounds = sorted({0, len(wire), *(c % (len(wire) + 1) for c in cuts)})
    got = []
    for start, end in itertools.pairwise(bounds):
        parser.feed(wire[start:end])
        while (command := parser.next_command()) is not None:
            got.append(command)
    assert got == expected
    assert parser.buffered == 0
