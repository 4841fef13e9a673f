"""proto.http1 against h11 on valid requests, any split of the bytes, and every smuggling case refused.

Every test runs on each parser (``PARSERS``): railcar's C binding of llhttp and httptools.
"""

from __future__ import annotations

import itertools

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from railcar.proto import http1_checks
from railcar.proto.http1 import (
    DEFAULT_LIMITS,
    PARSERS,
    Body,
    EndOfRequest,
    Limits,
    Rejected,
    Request,
    RequestInput,
    input_factory,
)

pytestmark = pytest.mark.parametrize("parser", PARSERS)


def connect(
    parser: str, limits: Limits = DEFAULT_LIMITS, client: object = None, server: object = None
) -> RequestInput:
    return input_factory(parser)(limits, client, server)


TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
PCHAR = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@%/"
RESERVED = {b"host", b"content-length", b"transfer-encoding", b"connection", b"upgrade", b"expect"}

names = st.text(TCHAR, min_size=1, max_size=12).map(str.encode).filter(lambda n: n.lower() not in RESERVED)
values = st.builds(
    lambda s: s.strip().encode("latin-1"),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E) | st.just(" "), max_size=20),
)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS"]))
    target = b"/" + draw(st.text(PCHAR.replace("%", ""), max_size=30)).encode()
    if draw(st.booleans()):
        target += b"?" + draw(st.text(PCHAR.replace("%", "") + "?", max_size=20)).encode()
    headers = draw(st.lists(st.tuples(names, values), max_size=8))
    head = b"%s %s HTTP/1.1\r\nHost: example.test\r\n" % (method, target)
    head += b"".join(b"%s: %s\r\n" % pair for pair in headers)
    body = draw(st.binary(max_size=300))
    if draw(st.booleans()):
        chunks = draw(st.lists(st.binary(min_size=1, max_size=50), max_size=5))
        framed = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
        return head + b"Transfer-Encoding: chunked\r\n\r\n" + framed
    if body or draw(st.booleans()):
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    return head + b"\r\n"


def ours(parser: str, stream: bytes, cuts: list[int] | None = None) -> list[tuple[object, ...]]:
    conn = connect(parser)
    bounds = [0, *(cuts or []), len(stream)]
    pieces = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    out: list[tuple[object, ...]] = []
    body = b""
    for piece in pieces:
        for event in conn.receive(piece):
            if isinstance(event, Request):
                headers = [(n.lower(), v) for n, v in event.headers]
                out.append((event.method.encode(), event.target, headers))
            elif isinstance(event, Body):
                body += event.data
            elif isinstance(event, EndOfRequest):
                out.append(("end", body))
                body = b""
            else:
                out.append(("rejected", event.status))
    return out


def theirs(stream: bytes) -> list[tuple[object, ...]]:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(stream)
    out: list[tuple[object, ...]] = []
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA or event is h11.PAUSED:  # one request is all h11 gives before a response
            break
        if isinstance(event, h11.Request):
            out.append((event.method, event.target, [(n, v) for n, v in event.headers.raw_items()]))
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            out.append(("end", body))
            body = b""
            break
    return out


@settings(max_examples=300, deadline=None)
@given(request=requests())
def test_valid_requests_parse_as_h11_parses_them(request: bytes, parser: str) -> None:
    expected = theirs(request)
    got = ours(parser, request)
    assert got[0][:2] == expected[0][:2]
    assert [(n.lower(), v) for n, v in expected[0][2]] == got[0][2]
    assert got[1] == expected[1]


@settings(max_examples=150, deadline=None)
@given(batch=st.lists(requests(), min_size=1, max_size=4), data=st.data())
def test_any_split_parses_like_the_whole(batch: list[bytes], data: st.DataObject, parser: str) -> None:
    stream = b"".join(batch)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(stream) - 1)), max_size=10))))
    whole = ours(parser, stream)
    assert ours(parser, stream, cuts) == whole
    assert len([e for e in whole if e[0] == "end"]) == len(batch)


def test_byte_at_a_time_parses_like_the_whole(parser: str) -> None:
    stream = (
        b"POST /a?b=c HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;ext=1\r\nabc\r\n0\r\nTrailer: t\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi"
    )
    assert ours(parser, stream, list(range(1, len(stream)))) == ours(parser, stream)


H = b"Host: a\r\n"
SMUGGLING = {
    "TE and CL": b"POST / HTTP/1.1\r\n"
    + H
    + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "CL and TE": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    "CL twice, same": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "CL twice, different": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "CL list": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3, 3\r\n\r\nabc",
    "CL sign": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +3\r\n\r\nabc",
    "CL negative": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -3\r\n\r\nabc",
    "CL hex": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0x3\r\n\r\nabc",
    "CL empty": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: \r\n\r\n",
    "CL overflow": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 99999999999999999999999\r\n\r\n",
    "TE gzip": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n",
    "TE chunked, gzip": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n",
    "TE gzip, chunked": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "TE chunked twice": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    "TE header twice": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "TE identity": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity\r\n\r\n",
    "TE xchunked": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "TE in HTTP/1.0": b"POST / HTTP/1.0\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "space before colon": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "chunk size not hex": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "chunk size overflow": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nabc\r\n0\r\n\r\n",
    "chunk size 0x": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n",
    "chunk size space": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n",
    "chunk ext control": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\n\r\n3;a\x01\r\nabc\r\n0\r\n\r\n",
    "chunk ext bare LF": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\n\r\n3;a\nabc\r\n0\r\n\r\n",
    "chunk size bare LF": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
    "chunk data overrun": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n",
    "chunk data bare LF": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\n0\r\n\r\n",
    "last chunk bare LF": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\n",
    "method not a token": b"G(T / HTTP/1.1\r\n" + H + b"\r\n",
    "control byte in target": b"GET /a\x01b HTTP/1.1\r\n" + H + b"\r\n",
    "DEL in target": b"GET /a\x7fb HTTP/1.1\r\n" + H + b"\r\n",
    "tab in target": b"GET /a\tb HTTP/1.1\r\n" + H + b"\r\n",
    "lower-case version": b"GET / http/1.1\r\n" + H + b"\r\n",
    "header name not a token": b"GET / HTTP/1.1\r\n" + H + b"X(y: a\r\n\r\n",
    "space in header name": b"GET / HTTP/1.1\r\n" + H + b"X y: a\r\n\r\n",
    "empty header name": b"GET / HTTP/1.1\r\n" + H + b": a\r\n\r\n",
    "control byte in value": b"GET / HTTP/1.1\r\n" + H + b"X: a\x01b\r\n\r\n",
    "NUL in value": b"GET / HTTP/1.1\r\n" + H + b"X: a\x00b\r\n\r\n",
    "DEL in value": b"GET / HTTP/1.1\r\n" + H + b"X: a\x7fb\r\n\r\n",
    "bare CR in value": b"GET / HTTP/1.1\r\n" + H + b"X: a\rb\r\n\r\n",
    "bare LF after request line": b"GET / HTTP/1.1\n" + H + b"\r\n",
    "bare LF after header": b"GET / HTTP/1.1\r\nHost: a\n\r\n",
    "bare LF ending head": b"GET / HTTP/1.1\r\n" + H + b"\n",
    "bare CR after request line": b"GET / HTTP/1.1\r" + H + b"\r\n",
    "bare CR ending head": b"GET / HTTP/1.1\r\n" + H + b"\rX",
    "obs-fold space": b"GET / HTTP/1.1\r\n" + H + b"X: a\r\n b\r\n\r\n",
    "obs-fold tab": b"GET / HTTP/1.1\r\n" + H + b"X: a\r\n\tb\r\n\r\n",
    "whitespace before first header": b"GET / HTTP/1.1\r\n X: a\r\n" + H + b"\r\n",
    "no Host": b"GET / HTTP/1.1\r\n\r\n",
    "two Hosts": b"GET / HTTP/1.1\r\n" + H + b"Host: b\r\n\r\n",
    "HTTP/0.9": b"GET /\r\n\r\n",
    "Upgrade with a body": b"POST / HTTP/1.1\r\n"
    + H
    + b"Content-Length: 3\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\nabcGET /x HTTP/1.1\r\n\r\n",
}


@pytest.mark.parametrize("name", SMUGGLING)
def test_smuggling_is_refused_with_400_and_nothing_else(name: str, parser: str) -> None:
    for cuts in (None, list(range(1, len(SMUGGLING[name])))):
        events = ours(parser, SMUGGLING[name], cuts)
        assert events[-1] == ("rejected", 400)
        assert all(e[0] != "end" for e in events), "nothing of the request is complete"


def reject_status(parser: str, stream: bytes, limits: Limits) -> int | None:
    conn = connect(parser, limits)
    events = conn.receive(stream)
    rejected = [e for e in events if isinstance(e, Rejected)]
    assert not any(isinstance(e, EndOfRequest) for e in events)
    return rejected[0].status if rejected else None


def test_limits_give_431_414_413(parser: str) -> None:
    limits = Limits(max_head=1024, max_headers=5, max_target=100, max_body=10)
    assert (
        reject_status(parser, b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 2000 + b"\r\n\r\n", limits) == 431
    )
    many = b"".join(b"X%d: v\r\n" % i for i in range(6))
    assert reject_status(parser, b"GET / HTTP/1.1\r\nHost: a\r\n" + many + b"\r\n", limits) == 431
    assert reject_status(parser, b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: a\r\n\r\n", limits) == 414
    assert reject_status(parser, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n", limits) == 413
    chunked = (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n12345678\r\n"
    )
    assert reject_status(parser, chunked, limits) == 413


def test_an_unfinished_header_is_bounded_across_reads(parser: str) -> None:
    conn = connect(parser, Limits(max_head=1024))
    assert conn.receive(b"GET / HTTP/1.1\r\nHost: a\r\nX: ") == []
    events: list[object] = []
    for _ in range(10):
        events += conn.receive(b"v" * 200)
    assert [e.status for e in events if isinstance(e, Rejected)] == [431]


def test_a_closing_request_ends_the_input(parser: str) -> None:
    conn = connect(parser)
    events = conn.receive(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    assert [type(e) for e in events] == [Request, EndOfRequest]
    assert not conn.reading
    events = connect(parser).receive(b"GET / HTTP/1.0\r\n\r\nGET /2 HTTP/1.0\r\n\r\n")
    assert [type(e) for e in events] == [Request, EndOfRequest]


COMMON_AND_NOT = [
    b"GET /a?b=c HTTP/1.1\r\nHost: h.test\r\nUser-Agent: x\r\n\r\n",
    b"GET /a HTTP/1.1\r\nhost: h.test\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\n\r\n",
    b"GET /a HTTP/1.0\r\nHost: h.test\r\nConnection: keep-alive\r\n\r\n",
    b"GET /a HTTP/1.0\r\nHost: h.test\r\nProxy-Connection: keep-alive\r\n\r\n",
    b"GET /a HTTP/1.0\r\nHost: h.test\r\n\r\n",
    b"GET http://h.test/a HTTP/1.1\r\nHost: h.test\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: h.test\r\n\r\n",
    b"POST /a HTTP/1.1\r\nHost: h.test\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi",
]


def fields(event: object) -> tuple[object, ...]:
    if not isinstance(event, Request):
        return (repr(event),)
    return tuple(getattr(event, name) for name in Request.__slots__)


@pytest.mark.parametrize("stream", COMMON_AND_NOT)
def test_a_head_parses_alike_before_and_after_its_host_is_known(stream: bytes, parser: str) -> None:
    http1_checks.valid_hosts.clear()  # the first parse checks the Host; the second may skip check_head
    first, second = (
        [fields(e) for e in connect(parser, client=("c", 1), server=("s", 2)).receive(stream)]
        for _ in range(2)
    )
    assert first == second
    assert first[0] == fields(connect(parser, client=("c", 1), server=("s", 2)).receive(stream)[0])
    version = stream.split(b"\r\n")[0].rsplit(b"/", 1)[1].decode()
    assert first[0][Request.__slots__.index("version")] == version


def test_connect_is_refused_whether_or_not_its_host_is_known(parser: str) -> None:
    for _ in range(2):
        events = connect(parser).receive(b"CONNECT / HTTP/1.1\r\nHost: known.test\r\n\r\n")
        assert [(type(e), getattr(e, "status", None)) for e in events] == [(Rejected, 501)]


def test_a_head_is_measured_when_its_read_could_hold_more_than_max_head(parser: str) -> None:
    limits = Limits(max_head=1024)
    head = b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 1300 + b"\r\n\r\n"
    conn = connect(parser, limits)
    events = conn.receive(head[:700]) + conn.receive(head[700:])  # each read under max_head
    assert [e.status for e in events if isinstance(e, Rejected)] == [431]
    fits = b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 900 + b"\r\n\r\n"
    assert [type(e) for e in connect(parser, limits).receive(fits)] == [Request, EndOfRequest]


def statuses(parser: str, head: bytes, cut: int | None, limits: Limits) -> list[object]:
    conn = connect(parser, limits)
    events = conn.receive(head) if cut is None else conn.receive(head[:cut]) + conn.receive(head[cut:])
    return [e.status if isinstance(e, Rejected) else type(e).__name__ for e in events]


@pytest.mark.parametrize("cut", [None, 1, 3, 5, 20])
def test_a_head_gets_the_same_answer_however_it_is_split(cut: int | None, parser: str) -> None:
    limits = Limits(max_head=1000)
    over = b"GET /plaintext HTTP/1.1\r\nHost: example.com\r\nX: " + b"v" * 952 + b"\r\n\r\n"
    assert len(over) == 1003
    assert statuses(parser, over, cut, limits) == [431]  # split inside the method too
    # 965 bytes without the optional space after the colons: within the limit either way.
    lines = b"".join(b"x%02d:%s\r\n" % (i, b"v" * 17) for i in range(40))
    fits = b"GET /plaintext HTTP/1.1\r\nHost:example.com\r\n" + lines + b"\r\n"
    assert len(fits) <= 1000
    assert statuses(parser, fits, cut, limits) == ["Request", "EndOfRequest"]


def test_trailer_fields_are_dropped_not_given_to_the_next_request(parser: str) -> None:
    stream = (
        b"POST /a HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"1\r\nx\r\n0\r\nX-Injected: 1\r\nHost: evil.com\r\n\r\n"
        b"GET /b HTTP/1.1\r\nHost: example.com\r\n\r\n"
    )
    for cuts in ([], [len(stream) - 30], list(range(1, len(stream)))):
        events = ours(parser, stream, cuts)
        assert events == [
            (b"POST", b"/a", [(b"host", b"example.com"), (b"transfer-encoding", b"chunked")]),
            ("end", b"x"),
            (b"GET", b"/b", [(b"host", b"example.com")]),
            ("end", b""),
        ]


def test_a_common_head_with_a_known_host_skips_check_head(
    monkeypatch: pytest.MonkeyPatch, parser: str
) -> None:
    checked: list[bytes] = []
    check_head = http1_checks.check_head

    def counting(method: bytes, target: bytes, version: str, headers: list[tuple[bytes, bytes]]) -> object:
        checked.append(target)
        return check_head(method, target, version, headers)

    monkeypatch.setattr(http1_checks, "check_head", counting)
    http1_checks.valid_hosts.clear()
    conn = connect(parser)
    conn.receive(b"GET /1 HTTP/1.1\r\nHost: h.test\r\n\r\nGET /2 HTTP/1.1\r\nHost: h.test\r\n\r\n")
    conn.receive(
        b"GET /3 HTTP/1.1\r\nHost: other.test\r\n\r\nGET /4 HTTP/1.1\r\nHost: h.test\r\nExpect: x\r\n\r\n"
    )
    assert checked == [b"/1", b"/3", b"/4"]


def test_a_content_length_with_thousands_of_leading_zeros_is_its_number(parser: str) -> None:
    request = b"POST /z HTTP/1.1\r\nHost: a\r\nContent-Length: " + b"0" * 5000 + b"2\r\n\r\nhi"
    assert ours(parser, request) == [
        (b"POST", b"/z", [(b"host", b"a"), (b"content-length", b"0" * 5000 + b"2")]),
        ("end", b"hi"),
    ]


def test_whitespace_after_a_value_is_not_part_of_it(parser: str) -> None:
    request = b"POST /p HTTP/1.1\r\nHost: x \r\nContent-Length: 3 \r\nX-T:\tv \t\r\n\r\nabc"
    assert ours(parser, request) == [
        (b"POST", b"/p", [(b"host", b"x"), (b"content-length", b"3"), (b"x-t", b"v")]),
        ("end", b"abc"),
    ]


def test_close_among_connection_options_ends_the_input(parser: str) -> None:
    conn = connect(parser)
    events = conn.receive(b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\nGET /2 HTTP/1.0\r\n\r\n")
    assert [type(e) for e in events] == [Request, EndOfRequest]
    assert not events[0].keep_alive  # type: ignore[union-attr]
    assert not conn.reading


@pytest.mark.parametrize("cuts", [None, [90]])
def test_trailer_fields_are_held_to_max_head(parser: str, cuts: list[int] | None) -> None:
    trailers = b"".join(b"T%d: %s\r\n" % (i, b"v" * 40) for i in range(6))  # 6 x 47 bytes
    stream = (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n"
        + trailers
        + b"\r\n"
    )
    conn = connect(parser, Limits(max_head=200))
    pieces = [stream] if cuts is None else [stream[: cuts[0]], stream[cuts[0] :]]
    events = [e for piece in pieces for e in conn.receive(piece)]
    assert [getattr(e, "status", type(e).__name__) for e in events] == ["Request", "Body", 431]


def test_an_absolute_form_target_gives_its_path_and_authority(parser: str) -> None:
    (request, _) = connect(parser).receive(
        b"GET http://Example.test:8080/a%2Fb?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert isinstance(request, Request)
    assert (request.raw_path, request.query, request.authority) == (b"/a%2Fb", b"x=1", b"Example.test:8080")
    (bare, _) = connect(parser).receive(b"GET http://h.test HTTP/1.1\r\nHost: h.test\r\n\r\n")
    assert isinstance(bare, Request)
    assert (bare.raw_path, bare.authority) == (b"/", b"h.test")
