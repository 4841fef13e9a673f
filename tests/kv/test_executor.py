"""The C executor of hot requests against the Python commands: the same replies, the same store.

Random pipelines of mixed commands, from two clients (one may BLPOP), go through two
in-process servers that differ only in their executor; every byte written and the whole
store (values, expiry times, the ``used`` estimate, the change count) must be the same.
"""

from __future__ import annotations

import gc
from collections import deque
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from railcar.apps.kv import FLUSH_AT, KvHandler
from railcar.engine.api import Conn
from railcar.errors import ConnectionClosed
from railcar.kv.executor import EXECUTORS, RunHot, new_executor
from railcar.kv.server import KvServer
from railcar.kv.store import KEY_OVERHEAD, Store, value_size
from railcar.proto.resp import Buffer, encode_command


def c_executor() -> RunHot:
    """The C executor's ``run``; raises ValueError, saying how to build it, where it is not built."""
    run = new_executor("c")
    assert run is not None
    return run


class Wire(Conn):
    """A Conn with no socket: keeps what the handler writes."""

    __slots__ = ("ended", "sent")

    def __init__(self) -> None:
        super().__init__(("peer", 1), ("local", 2))
        self.sent = bytearray()
        self.ended = False

    def write(self, data: Buffer) -> None:
        if self.ended:
            raise ConnectionClosed("closed")
        self.sent += data

    def close(self) -> None:
        self.ended = True

    def abort(self) -> None:
        self.ended = True

    @property
    def closed(self) -> bool:
        return self.ended


class Clock:
    """A clock the test moves: both servers see the same times."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class LazyStore(Store):
    """Expiry on lookup only: the sampled sweep depends on wall time, which the two servers do not share."""

    def active_expire(self, budget: float = 0.001, every: float = 0.1) -> int:
        return 0


class Node:
    """One in-process server and its two connections."""

    def __init__(self, executor: str, clock: Clock) -> None:
        self.handler = KvHandler(KvServer(store=LazyStore(clock=clock)), executor=executor)
        self.wires = [Wire(), Wire()]
        for wire in self.wires:
            self.handler.on_open(wire)

    def send(self, client: int, wire: bytes) -> None:
        if not self.wires[client].ended:
            self.handler.on_data(self.wires[client], memoryview(wire))

    def state(self) -> Any:
        kv = self.handler.kv
        store = kv.store
        dbs = [(list(db.data.items()), list(db.expires.items())) for db in store.dbs]
        return dbs, store.used, store.dirty, kv.commands_processed, sorted(store.blocked_on)

    def close(self) -> None:
        for wire in self.wires:
            self.handler.on_close(wire, None)
        self.handler.close()


KEYS = [b"k", b"L", b"n"]
WORDS = [b"", b"0", b"1", b"-1", b"41", b"x", b"9223372036854775806", b"9223372036854775807", b"1" * 1500]
HOT = [b"GET", b"SET", b"INCR", b"LPUSH", b"RPUSH", b"LPOP", b"RPOP"]
OTHERS = [
    [b"SET", b"{key}", b"{word}", b"PX", b"1500"],
    [b"SET", b"{key}", b"{word}", b"NX"],
    [b"SET", b"{key}", b"{word}", b"KEEPTTL"],
    [b"GET", b"{key}", b"{word}"],
    [b"LPOP", b"{key}", b"2"],
    [b"RPUSH", b"{key}", b"{word}", b"{word}"],
    [b"INCRBY", b"{key}", b"9223372036854775806"],
    [b"EXPIRE", b"{key}", b"100"],
    [b"PEXPIRE", b"{key}", b"1500"],
    [b"PERSIST", b"{key}"],
    [b"DEL", b"{key}"],
    [b"TYPE", b"{key}"],
    [b"LLEN", b"{key}"],
    [b"SADD", b"{key}", b"{word}"],
    [b"HSET", b"{key}", b"f", b"{word}"],
    [b"APPEND", b"{key}", b"{word}"],
    [b"SELECT", b"1"],
    [b"SELECT", b"0"],
    [b"MULTI"],
    [b"EXEC"],
    [b"DISCARD"],
    [b"WATCH", b"{key}"],
    [b"UNWATCH"],
    [b"HELLO", b"3"],
    [b"HELLO", b"2"],
    [b"CONFIG", b"SET", b"maxmemory", b"1gb"],
    [b"CONFIG", b"SET", b"maxmemory", b"0"],
    [b"BLPOP", b"{key}", b"L", b"0"],
    [b"BRPOP", b"{key}", b"0"],
    [b"PING"],
    [b"NOSUCH", b"{key}"],
]


@st.composite
def requests(draw: st.DrawFn) -> list[bytes]:
    key, word = draw(st.sampled_from(KEYS)), draw(st.sampled_from(WORDS))
    if draw(st.integers(0, 2)):  # mostly the hot commands, in any case, at their plain arity
        name = draw(st.sampled_from(HOT))
        name = draw(st.sampled_from([name, name.lower(), name.capitalize()]))
        if name.upper() in (b"GET", b"INCR", b"LPOP", b"RPOP"):
            return [name, key]
        return [name, key, word]
    template = draw(st.sampled_from(OTHERS))
    return [key if part == b"{key}" else word if part == b"{word}" else part for part in template]


blocking = st.tuples(st.sampled_from([b"BLPOP", b"BRPOP"]), st.sampled_from(KEYS)).map(
    lambda parts: [parts[0], parts[1], b"0"]
)
# A step: one client's pipeline in one read (the second client's often begins by blocking on a
# list, for the first one's pushes to wake), or the clock moving on (keys given PX 1500 expire).
steps = st.one_of(
    st.tuples(st.just(0), st.lists(requests(), min_size=1, max_size=40)),
    st.tuples(
        st.just(1),
        st.tuples(st.lists(blocking, max_size=1), st.lists(requests(), min_size=1, max_size=10)).map(
            lambda parts: parts[0] + parts[1]
        ),
    ),
    st.just((-1, [])),
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(program=st.lists(steps, min_size=1, max_size=8))
def test_random_pipelines_give_the_same_replies_and_store(
    program: list[tuple[int, list[list[bytes]]]],
) -> None:
    clock = Clock()
    nodes = [Node("c", clock), Node("python", clock)]
    try:
        for client, pipeline in program:
            if client < 0:
                clock.now += 2.0
                continue
            wire = b"".join(encode_command(*request) for request in pipeline)
            for node in nodes:
                node.send(client, wire)
            c, python = nodes
            assert [bytes(w.sent) for w in c.wires] == [bytes(w.sent) for w in python.wires], pipeline
            assert c.state() == python.state(), pipeline
    finally:
        for node in nodes:
            node.close()


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_pipeline_past_the_flush_size_is_answered_in_full(executor: str) -> None:
    node = Node(executor, Clock())
    big = b"v" * 100_000
    node.send(0, encode_command("SET", "big", big))
    count = 3 * FLUSH_AT // len(big)
    node.send(0, b"".join(encode_command("GET", "big") for _ in range(count)) + encode_command("INCR", "n"))
    reply = b"$%d\r\n%s\r\n" % (len(big), big)
    assert bytes(node.wires[0].sent) == b"+OK\r\n" + reply * count + b":1\r\n"
    node.close()


@pytest.mark.parametrize("executor", EXECUTORS)
def test_lazy_expiry_and_a_blocked_client_woken_by_a_pipelined_push(executor: str) -> None:
    clock = Clock()
    node = Node(executor, clock)
    node.send(0, encode_command("SET", "k", "v", "PX", "100") + encode_command("GET", "k"))
    clock.now += 1.0
    node.send(0, encode_command("GET", "k"))
    assert bytes(node.wires[0].sent) == b"+OK\r\n$1\r\nv\r\n$-1\r\n"
    assert node.handler.kv.store.dbs[0].data == {}
    node.send(1, encode_command("BLPOP", "q", "0") + encode_command("GET", "after"))
    node.send(
        0, encode_command("LPUSH", "q", "a") + encode_command("LPUSH", "q", "b") + encode_command("LLEN", "q")
    )
    assert bytes(node.wires[0].sent).endswith(b":1\r\n:1\r\n:1\r\n")  # the waiter took "a" in between
    assert bytes(node.wires[1].sent) == b"*2\r\n$1\r\nq\r\n$1\r\na\r\n$-1\r\n"
    node.close()


def test_run_refuses_wrong_arguments_and_leaves_anything_odd_to_python() -> None:
    run = c_executor()
    db = KvServer().store.dbs[0]
    out = bytearray()
    with pytest.raises(TypeError):
        run([[b"GET", b"k"]], 0, db, b"", False, FLUSH_AT)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        run((), 0, db, out, False, FLUSH_AT)  # type: ignore[arg-type]
    with pytest.raises(IndexError):
        run([], 1, db, out, False, FLUSH_AT)
    with pytest.raises(AttributeError):
        run([[b"GET", b"k"]], 0, object(), out, False, FLUSH_AT)  # type: ignore[arg-type]
    odd: list[Any] = [
        (b"GET", b"k"),
        [b"GET"],
        [],
        [b"GET", "k"],
        [bytearray(b"GET"), b"k"],
        [b"SET", b"k", 1],
        [b"LPUSH", b"k", b"a", None],
        [b"GETS", b"k"],
        [b"GET", b"k", b"x"],
    ]
    for request in odd:
        assert run([[b"GET", b"k"], request], 0, db, out, False, FLUSH_AT) == 1
    assert out == b"$-1\r\n" * len(odd)
    assert db.data == {}
    assert (db.store.used, db.store.dirty) == (0, 0)


def test_an_error_part_way_keeps_the_store_accounts_right() -> None:
    run = c_executor()
    store = KvServer().store
    db = store.dbs[0]
    out = bytearray()
    view = memoryview(out)  # an exported bytearray cannot grow: the first reply raises
    with pytest.raises(BufferError):
        run([[b"SET", b"k", b"value"], [b"SET", b"j", b"v"]], 0, db, out, False, FLUSH_AT)
    view.release()
    assert db.data == {b"k": b"value"}  # the SET ran before its reply failed
    assert store.dirty == 1
    assert store.used == sum(len(k) + KEY_OVERHEAD + value_size(v) for k, v in db.data.items())


class Finalizer:
    """A garbage cycle whose ``__del__`` runs ``action`` when the collector frees it."""

    def __init__(self, action: Any) -> None:
        self.action = action
        self.me = self

    def __del__(self) -> None:
        self.action()


@pytest.mark.parametrize("action", ["clear the batch", "write to the store"])
def test_finalizers_run_by_a_new_list_neither_crash_it_nor_skew_the_accounts(action: str) -> None:
    run = c_executor()
    store = KvServer().store
    db = store.dbs[0]
    batch = [[b"LPUSH", b"new", b"x" * 40], [b"GET", b"a"]]
    effects = {"clear the batch": batch.clear, "write to the store": lambda: db.set_string(b"z", b"y" * 1000)}
    out = bytearray()
    thresholds = gc.get_threshold()
    gc.collect()
    gc.disable()
    Finalizer(effects[action])
    gc.set_threshold(1, 1, 1)  # the next allocation the collector tracks frees the cycle
    gc.enable()
    try:
        stopped = run(batch, 0, db, out, False, FLUSH_AT)
    finally:
        gc.set_threshold(*thresholds)
    assert stopped == 1  # the run ends after a request that may have run Python code
    assert bytes(out) == b":1\r\n"
    assert db.data[b"new"] == deque([b"x" * 40])
    assert store.used == sum(len(k) + KEY_OVERHEAD + value_size(v) for k, v in db.data.items())


class HashLike:
    """A key equal in hash to ``key`` whose comparison deletes ``key``'s value."""

    def __init__(self, data: dict[bytes, Any], key: bytes) -> None:
        self.data, self.key = data, key

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        self.data.pop(self.key, None)
        return False


@pytest.mark.parametrize("command", [b"GET", b"INCR", b"LPOP"])
def test_an_expiry_lookup_that_runs_python_code_frees_no_value_in_use(command: bytes) -> None:
    run = c_executor()
    store = KvServer().store
    db = store.dbs[0]
    db.data[b"k"] = {b"GET": b"v" * 50, b"INCR": 7, b"LPOP": deque([b"a"])}[command]
    db.expires[HashLike(db.data, b"k")] = 1  # type: ignore[index]
    out = bytearray()
    stopped = run([[command, b"k"]], 0, db, out, False, FLUSH_AT)
    assert db.data == {}  # the comparison deleted it before the value was looked up
    assert (stopped, bytes(out)) in {(1, b"$-1\r\n"), (0, b"")}  # a miss, or left to Python


@settings(max_examples=300)
@given(
    batch=st.lists(
        st.one_of(
            st.lists(
                st.one_of(
                    st.sampled_from([b"GET", b"SET", b"INCR", b"LPUSH", b"RPOP"]), st.binary(max_size=4)
                ),
                max_size=4,
            ),
            st.lists(
                st.one_of(st.none(), st.integers(), st.text(max_size=2), st.binary(max_size=2)), max_size=4
            ),
            st.none(),
            st.integers(),
        ),
        max_size=12,
    ),
    start=st.integers(0, 12),
    resp3=st.booleans(),
    flush_at=st.integers(-1, 64),
)
def test_run_on_any_batch_never_crashes_and_keeps_the_accounts(
    batch: list[Any], start: int, resp3: bool, flush_at: int
) -> None:
    run = c_executor()
    store = KvServer().store
    db = store.dbs[0]
    db.data[b"L"] = deque([b"x"])
    db.data[b"s"] = {b"m"}
    store.used = sum(len(k) + KEY_OVERHEAD + value_size(v) for k, v in db.data.items())
    out = bytearray()
    try:
        stopped = run(batch, start, db, out, resp3, flush_at)
    except IndexError:
        assert start > len(batch)
        return
    assert start <= stopped <= len(batch)
    assert store.used == sum(len(k) + KEY_OVERHEAD + value_size(v) for k, v in db.data.items())
