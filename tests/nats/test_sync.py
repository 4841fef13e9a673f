"""The blocking client ``railcar.nats.sync`` against a real nats-server, used from several threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

import railcar.nats as rn
from railcar.nats import sync
from tests.nats.server import NatsServer

StartNats = Callable[..., NatsServer]


@pytest.fixture
def nc(nats_server: NatsServer) -> Iterator[sync.SyncClient]:
    client = sync.connect(nats_server.url, name="railcar-sync-test")
    yield client
    client.close()


def run_threads(count: int, target: Callable[[int], None]) -> None:
    """Run ``target(i)`` on ``count`` threads; re-raise the first failure."""
    errors: list[BaseException] = []

    def wrapped(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()
    if errors:
        raise errors[0]


def test_publishes_from_many_threads_all_arrive_in_each_threads_order(nc: sync.SyncClient) -> None:
    sub = nc.subscribe("sync.many")
    nc.flush()

    def publisher(i: int) -> None:
        for n in range(500):
            nc.publish("sync.many", b"%d:%d" % (i, n))
        nc.flush()

    run_threads(8, publisher)
    got = [sub.next_msg(5).data for _ in range(8 * 500)]
    for i in range(8):
        mine = [int(d.split(b":")[1]) for d in got if d.startswith(b"%d:" % i)]
        assert mine == list(range(500))
    with pytest.raises(TimeoutError):
        sub.next_msg(0.05)


def test_requests_from_many_threads_get_their_own_replies(
    nats_server: NatsServer, nc: sync.SyncClient
) -> None:
    with sync.connect(nats_server.url) as responder:
        service = responder.subscribe("sync.svc")
        responder.flush()

        def serve() -> None:
            for msg in service:
                responder.publish(msg.reply, b"re:" + msg.data)

        server_thread = threading.Thread(target=serve)
        server_thread.start()

        def requester(i: int) -> None:
            for n in range(50):
                reply = nc.request("sync.svc", b"%d-%d" % (i, n), timeout=5)
                assert reply.data == b"re:%d-%d" % (i, n)

        run_threads(6, requester)
        service.unsubscribe()
        server_thread.join(10)
        assert not server_thread.is_alive()


def test_headers_and_queue_groups(nc: sync.SyncClient) -> None:
    first = nc.subscribe("sync.q", queue="g")
    second = nc.subscribe("sync.q", queue="g")
    nc.flush()
    for n in range(40):
        nc.publish("sync.q", b"%d" % n, headers={"N": str(n)})
    nc.flush()
    got = []
    for sub in (first, second):
        while True:
            try:
                got.append(sub.next_msg(0.2))
            except TimeoutError:
                break
    assert sorted(int(m.data) for m in got) == list(range(40))
    assert all(m.headers is not None and m.headers["N"] == m.data.decode() for m in got)


def test_max_msgs_ends_the_iteration(nc: sync.SyncClient) -> None:
    sub = nc.subscribe("sync.max", max_msgs=3)
    nc.flush()
    for n in range(5):
        nc.publish("sync.max", b"%d" % n)
    nc.flush()
    assert [m.data for m in sub] == [b"0", b"1", b"2"]
    with pytest.raises(rn.SubscriptionClosed):
        sub.next_msg(1)


def test_several_threads_wait_on_one_subscription(nc: sync.SyncClient) -> None:
    sub = nc.subscribe("sync.shared")
    nc.flush()
    got: list[bytes] = []
    lock = threading.Lock()

    def reader(_: int) -> None:
        for _n in range(10):
            msg = sub.next_msg(10)
            with lock:
                got.append(msg.data)

    readers = threading.Thread(target=run_threads, args=(4, reader))
    readers.start()
    time.sleep(0.1)  # the readers are waiting before anything is published
    for n in range(40):
        nc.publish("sync.shared", b"%d" % n)
    nc.flush()
    readers.join(30)
    assert sorted(int(d) for d in got) == list(range(40))


def test_errors_raise_in_the_calling_thread(nats_server: NatsServer, nc: sync.SyncClient) -> None:
    with pytest.raises(rn.NoResponders):
        nc.request("sync.nobody", b"x", timeout=2)
    with pytest.raises(rn.InvalidSubject):
        nc.publish("bad subject", b"x")
    with pytest.raises(rn.MaxPayloadExceeded):
        nc.publish("sync.big", b"x" * (nc.max_payload + 1))
    sub = nc.subscribe("sync.quiet")
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        sub.next_msg(0.2)
    assert time.monotonic() - started < 2
    responder = sync.connect(nats_server.url)
    responder.subscribe("sync.silent")  # never answers
    responder.flush()
    with pytest.raises(rn.RequestTimeout):
        nc.request("sync.silent", b"x", timeout=0.2)
    responder.close()


def test_connect_failure_raises_and_leaves_no_thread() -> None:
    before = threading.active_count()
    with pytest.raises(ConnectionRefusedError):
        sync.connect("nats://127.0.0.1:1", connect_timeout=2)
    with pytest.raises(ValueError, match="bad NATS URL"):
        sync.connect("nats://127.0.0.1:nope")
    assert threading.active_count() == before


def test_close_ends_waiting_readers_and_later_calls_fail(nats_server: NatsServer) -> None:
    nc = sync.connect(nats_server.url)
    sub = nc.subscribe("sync.closing")
    nc.flush()
    outcome: list[BaseException] = []

    def reader() -> None:
        try:
            sub.next_msg()
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    time.sleep(0.1)
    nc.publish("sync.closing.other", b"queued before close")
    nc.close()
    thread.join(10)
    assert not thread.is_alive()
    assert isinstance(outcome[0], rn.SubscriptionClosed)
    with pytest.raises(rn.ConnectionLost):
        nc.publish("sync.closing", b"x")
    with pytest.raises(rn.ConnectionLost):
        nc.flush()
    nc.close()  # twice is fine


def test_reconnects_and_keeps_its_subscriptions(start_nats: StartNats) -> None:
    server = start_nats()
    reconnected = threading.Event()
    nc = sync.connect(server.url, reconnect_wait=0.1, on_reconnect=reconnected.set)
    try:
        sub = nc.subscribe("sync.again")
        nc.flush()
        server.restart()
        assert reconnected.wait(10)
        nc.publish("sync.again", b"after")
        nc.flush()
        assert sub.next_msg(5).data == b"after"
    finally:
        nc.close()


def test_publishes_while_away_wait_in_the_bounded_buffer(start_nats: StartNats) -> None:
    server = start_nats()
    nc = sync.connect(server.url, reconnect_wait=0.1, pending_size=1000)
    try:
        server.stop()
        deadline = time.monotonic() + 10
        while nc.connected and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not nc.connected
        nc.publish("sync.away", b"x" * 100)
        with pytest.raises(rn.OutboundBufferFull):
            nc.publish("sync.away", b"x" * 1000)
    finally:
        nc.close()
