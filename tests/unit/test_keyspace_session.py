"""The GET/SET key-space sessions of ``railcar load`` (kvbin and RESP), against a store kept here."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from railcar.errors import ProtocolError
from railcar.kv.server import KvServer
from railcar.load.workloads import Session, Workload
from railcar.proto import kvbin
from railcar.proto.resp import RequestParser, encode_reply


def kvbin_server(kv: KvServer, wire: bytes, lose_sets: bool = False) -> bytes:
    """What a kvbin server answers to ``wire`` (a correct one, unless it loses SETs)."""
    out = bytearray()
    data = kv.store.dbs[0].data
    for op, key, value in kvbin.RequestParser().feed(wire):
        if op == kvbin.SET:
            if not lose_sets:
                data[key] = value
            out += kvbin.OK_REPLY
        elif key in data:
            kvbin.encode_reply(kvbin.OK, data[key], out)
        else:
            out += kvbin.NOT_FOUND_REPLY
    return bytes(out)


def resp_server(kv: KvServer, wire: bytes, lose_sets: bool = False) -> bytes:
    """What railcar's RESP commands answer to ``wire`` (unless it loses SETs)."""
    client, parser, out = kv.new_client(), RequestParser(), bytearray()
    parser.feed(wire)
    while (command := parser.next_command()) is not None:
        if lose_sets and command[0] == b"SET":
            out += b"+OK\r\n"
            continue
        encode_reply(client.execute(command), out, False)
    return bytes(out)


SERVERS = {"kvbin": kvbin_server, "resp": resp_server}


def session(protocol: str, **settings: object) -> Session:
    return Workload(protocol, ratio=(1, 1), **settings).session(7)  # type: ignore[arg-type]


@given(
    protocol=st.sampled_from(sorted(SERVERS)),
    batches=st.lists(st.integers(1, 20), min_size=1, max_size=6),
    cuts=st.lists(st.integers(0, 10_000), max_size=20),
    value_size=st.integers(1, 40),
)
def test_right_values_complete_in_any_split(
    protocol: str, batches: list[int], cuts: list[int], value_size: int
) -> None:
    kv, user = KvServer(), session(protocol, keys=3, value_size=value_size)
    for count in batches:
        replies = SERVERS[protocol](kv, user.requests(count))
        bounds = sorted({0, len(replies), *(c % (len(replies) + 1) for c in cuts)})
        done = 0
        for start, end in itertools.pairwise(bounds):
            completed, wrong = user.feed(replies[start:end])
            assert wrong == 0
            done += completed
        assert done == count


@pytest.mark.parametrize("protocol", sorted(SERVERS))
def test_a_stale_value_is_a_wrong_value_and_the_session_goes_on(protocol: str) -> None:
    kv, user = KvServer(), session(protocol, keys=1)
    assert user.feed(SERVERS[protocol](kv, user.requests(2))) == (2, 0)  # SET then GET of key 0
    lost = SERVERS[protocol](kv, user.requests(2), lose_sets=True)  # the GET reads the old value
    assert user.feed(lost) == (2, 1)
    assert user.feed(SERVERS[protocol](kv, user.requests(2))) == (2, 0)


@pytest.mark.parametrize(
    ("protocol", "reply"),
    [("kvbin", b"\x04\x00\x02no"), ("kvbin", b"\x09"), ("resp", b"-ERR no\r\n"), ("resp", b"*1\r\n")],
)
def test_an_error_or_garbage_is_a_mismatch(protocol: str, reply: bytes) -> None:
    user = session(protocol)
    user.requests(1)
    with pytest.raises(ProtocolError):
        user.feed(reply)


def test_more_replies_than_requests_is_a_mismatch() -> None:
    user = session("kvbin")
    user.requests(1)
    with pytest.raises(ProtocolError, match="more than"):
        user.feed(kvbin.OK_REPLY * 2)
