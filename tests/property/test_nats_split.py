"""The NATS parser gives the same events however the server's byte stream is cut."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from railcar.proto.nats import (
    OK,
    PING,
    PONG,
    Err,
    Headers,
    Info,
    Msg,
    Parser,
    header_block,
)

tokens = st.text(alphabet="abcxyz_-0123456789", min_size=1, max_size=6)
subjects = st.lists(tokens, min_size=1, max_size=4).map(".".join)
payloads = st.binary(max_size=300) | st.sampled_from([b"", b"\r\n", b"MSG a 1 2\r\nxx\r\n", b"PING\r\n"])
header_pairs = st.lists(
    st.tuples(
        st.text(alphabet="ABCdef-_", min_size=1, max_size=8),
        st.text(alphabet="abc 123:;=", max_size=10).map(str.strip),
    ),
    max_size=4,
)


@st.composite
def operations(draw: st.DrawFn) -> tuple[bytes, object]:
    kind = draw(st.sampled_from(["msg", "hmsg", "ping", "pong", "ok", "err", "info"]))
    if kind in {"msg", "hmsg"}:
        subject = draw(subjects).encode()
        sid = draw(st.integers(1, 2**40))
        reply = draw(st.one_of(st.just(""), subjects)).encode()
        data = draw(payloads)
        reply_arg = b" " + reply if reply else b""
        if kind == "msg":
            return b"MSG %b %d%b %d\r\n%b\r\n" % (subject, sid, reply_arg, len(data), data), Msg(
                subject, sid, reply, data
            )
        status = draw(st.sampled_from([None, 503, 408]))
        headers = Headers(draw(header_pairs), status, "Timeout" if status == 408 else "")
        block = header_block(headers)
        line = b"HMSG %b %d%b %d %d\r\n" % (subject, sid, reply_arg, len(block), len(block) + len(data))
        return line + block + data + b"\r\n", Msg(subject, sid, reply, data, headers)
    if kind == "ping":
        return b"PING\r\n", PING
    if kind == "pong":
        return b"PONG\r\n", PONG
    if kind == "ok":
        return b"+OK\r\n", OK
    if kind == "err":
        text = draw(st.text(alphabet="abc XYZ", min_size=1, max_size=20).map(str.strip).filter(bool))
        return b"-ERR '%b'\r\n" % text.encode(), Err(text)
    port = draw(st.integers(0, 65535))
    return b'INFO {"port":%d,"headers":true}\r\n' % port, ("info", port)


def normalise(event: object) -> object:
    return ("info", event.options["port"]) if isinstance(event, Info) else event


@settings(max_examples=300, deadline=None)
@given(st.lists(operations(), max_size=20), st.lists(st.integers(0, 4000), max_size=30))
def test_any_split_gives_the_same_events(ops: list[tuple[bytes, object]], cuts: list[int]) -> None:
    stream = b"".join(data for data, _ in ops)
    expected = [event for _, event in ops]
    points = sorted({min(cut, len(stream)) for cut in cuts})
    parser = Parser()
    events: list[object] = []
    start = 0
    for point in [*points, len(stream)]:
        events.extend(parser.feed(stream[start:point]))
        start = point
    assert [normalise(e) for e in events] == expected
    assert parser.buffered == 0


@settings(max_examples=100, deadline=None)
@given(st.lists(operations(), min_size=1, max_size=10))
def test_byte_at_a_time(ops: list[tuple[bytes, object]]) -> None:
    stream = b"".join(data for data, _ in ops)
    parser = Parser()
    events: list[object] = []
    for i in range(len(stream)):
        events.extend(parser.feed(stream[i : i + 1]))
    assert [normalise(e) for e in events] == [event for _, event in ops]
