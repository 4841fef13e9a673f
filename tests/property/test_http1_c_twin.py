"""The C parser (``_http1.c``) gives the httptools one's events and state on any input, split anywhere."""

from __future__ import annotations

import gc
import itertools
import weakref

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from railcar.proto import http1_checks
from railcar.proto.http1 import Limits, Rejected, Request, input_factory

SAMPLES = [
    b"GET /plaintext HTTP/1.1\r\nHost: h.test\r\nUser-Agent: x\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET /a HTTP/1.0\r\nHost: h.test\r\nConnection: keep-alive\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: h.test\r\nContent-Length: 5\r\n\r\nhello",
    (
        b"POST /c HTTP/1.1\r\nhost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;x=1\r\nabc\r\n0\r\nT: 1\r\n\r\n"
    ),
    b"POST /e HTTP/1.1\r\nHost: h.test\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
    b"GET /u HTTP/1.1\r\nHost: h.test\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"GET /k HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: h.test\r\n\r\n",
    b"CONNECT h.test:443 HTTP/1.1\r\nHost: h.test\r\n\r\n",
    b"GET http://h.test/x HTTP/1.1\r\nHost: h.test\r\nX-Empty:\r\n\r\n",
    b"GET / HTTP/2.0\r\nHost: h.test\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET /k2 HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
    b"GET http://h.test/abs?q HTTP/1.1\r\nHost: h.test \r\nX-Pad: v \t\r\n\r\n",
    b"POST /t HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: "
    + b"v" * 300
    + b"\r\n\r\n",
    b"POST /z HTTP/1.1\r\nHost: h.test\r\nContent-Length: " + b"0" * 5000 + b"2\r\n\r\nhi",
]
NOISE = [b"\r", b"\n", b"\x00", b" ", b":", b"\t", b"\x7f", b"0", b"Host: h.test\r\n", b"\r\n\r\n"]


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    parts = draw(st.lists(st.sampled_from(SAMPLES), min_size=1, max_size=5))
    stream = bytearray(b"".join(parts))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(stream)))
        if draw(st.booleans()):
            stream[at:at] = draw(st.sampled_from(NOISE))
        else:
            del stream[at : at + draw(st.integers(1, 4))]
    return bytes(stream)


limits = st.builds(
    Limits,
    max_head=st.integers(20, 400),
    max_headers=st.integers(1, 6),
    max_target=st.integers(1, 40),
    max_body=st.integers(1, 20),
)


def run(parser: str, pieces: list[bytes], chosen: Limits) -> list[object]:
    conn = input_factory(parser)(chosen, ("c", 1), ("s", 2))
    seen: list[object] = []
    for piece in pieces:
        for event in conn.receive(piece):
            if isinstance(event, Request):
                seen.append(tuple(getattr(event, name) for name in Request.__slots__))
            else:
                seen.append(repr(event))
        seen.append((conn.reading, conn.in_request))
    return seen


@settings(max_examples=400, deadline=None)
@given(stream=streams(), chosen=limits, data=st.data())
def test_the_c_parser_matches_httptools(stream: bytes, chosen: Limits, data: st.DataObject) -> None:
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(stream) - 1)), max_size=6))))
    pieces = [stream[a:b] for a, b in itertools.pairwise([0, *cuts, len(stream)])]
    for known_hosts in (False, True):  # Host not yet known (check_head runs), then known (common path)
        if not known_hosts:
            http1_checks.valid_hosts.clear()
        expected = run("httptools", pieces, chosen)
        if not known_hosts:
            http1_checks.valid_hosts.clear()
        assert run("c", pieces, chosen) == expected


def test_receive_called_while_it_runs_is_refused_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = input_factory("c")(Limits(), None, None)
    inner: list[BaseException] = []

    def reentering(*args: object) -> object:
        try:
            conn.receive(b"GET / HTTP/1.1\r\n")
        except RuntimeError as exc:
            inner.append(exc)
        raise ValueError("the check failed")

    monkeypatch.setattr(http1_checks, "check_head", reentering)
    events = conn.receive(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx")
    assert [str(exc) for exc in inner] == ["receive() called while it runs (one thread at a time)"]
    # As httptools does with a callback's exception: 400 with llhttp's reason, and the input ends.
    assert [(type(e), getattr(e, "status", None)) for e in events] == [(Rejected, 400)]
    assert not conn.reading


def test_a_connection_in_a_reference_cycle_is_collected() -> None:
    class Peer:
        conn: object = None

    peer = Peer()
    peer.conn = input_factory("c")(Limits(), peer, None)
    gone = weakref.ref(peer)
    del peer
    gc.collect()
    assert gone() is None


def test_a_rejected_input_set_reading_again_repeats_its_rejection() -> None:
    for parser in ("c", "httptools"):
        conn = input_factory(parser)(Limits(max_target=5), None, None)
        first = conn.receive(b"GET /aaaaaaaa HTTP/1.1\r\n")
        conn.reading = True
        assert repr(conn.receive(b"x")) == repr(first) == "[Rejected(414, 'request target over 5 bytes')]"


def test_a_deleted_address_reads_as_none() -> None:
    conn = input_factory("c")(Limits(), ("c", 1), ("s", 2))
    del conn.client
    (request, _) = conn.receive(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert isinstance(request, Request)
    assert (request.client, request.server) == (None, ("s", 2))


def test_limits_past_what_c_holds_are_no_limits() -> None:
    huge = 2**70
    conn = input_factory("c")(Limits(huge, huge, huge, huge), None, None)
    events = conn.receive(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
    assert [type(e).__name__ for e in events] == ["Request", "Body", "EndOfRequest"]
