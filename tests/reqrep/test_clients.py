"""Client behaviour a long-running service relies on, one test body run on both clients.

Servers here are real ``railcar serve reqrep`` processes (killed, stopped, restarted) or
peers that misbehave on purpose (never answer, never read).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from railcar.apps.increment import increment_service
from railcar.bench.procs import ServerProcess, running_server
from railcar.errors import ConnectionLost, FrameTooLarge, RequestTimeout
from railcar.reqrep import Client, ClientPool, create_reqrep_server
from tests.helpers import wait_until
from tests.reqrep.conftest import DeafServer, OpenClient, SilentServer


@contextlib.contextmanager
def reqrep_process(port: int = 0) -> Iterator[ServerProcess]:
    """A ``railcar serve reqrep`` process (n -> n + 1), on ``port`` (0: any free one)."""
    with running_server(("railcar", "serve", "reqrep", "--codec", "int32", "--port", str(port))) as server:
        yield server


def outcome_in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run ``call`` in a thread; the list gets its result or the exception it raised."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as exc:  # the test inspects it
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def raises_within(seconds: float, expected: type[BaseException], call: Callable[[], Any]) -> BaseException:
    """Assert ``call`` raises ``expected`` and takes at most ``seconds``; return the exception."""
    started = time.monotonic()
    with pytest.raises(expected) as caught:
        call()
    assert time.monotonic() - started < seconds
    return caught.value


def stopped(pid: int) -> bool:
    """True once every thread of process ``pid`` is stopped (state T), as SIGSTOP leaves it."""
    states = [
        pathlib.Path(f"/proc/{pid}/task/{task}/stat").read_text().rpartition(")")[2].split()[0]
        for task in os.listdir(f"/proc/{pid}/task")
    ]
    return all(state == "T" for state in states)


def test_a_killed_server_restarted_on_its_port_is_served_again(open_client: OpenClient) -> None:
    disconnects: list[BaseException] = []
    with reqrep_process() as server:
        port = server.port
        client = open_client(port, reconnect_wait=0.5, on_disconnect=disconnects.append)
        assert client.call(1) == 2
        pending, outcome = outcome_in_thread(lambda: client.call_many(range(3_000_000)))
        assert wait_until(lambda: client.in_flight > 0)
        os.kill(server.pid, signal.SIGKILL)
        pending.join(5)
        assert len(outcome) == 1
        assert isinstance(outcome[0], ConnectionLost)  # pending at the loss: failed, never re-sent
        assert wait_until(lambda: not client.connected)
        assert client.in_flight == 0
        assert not client.closed
        assert wait_until(lambda: len(disconnects) == 1)  # callbacks run on a thread of their own
    with reqrep_process(port):
        accepting = time.monotonic()
        assert client.call(5, timeout=10) == 6  # made while reconnecting: waits for the connection
        # Back within reconnect_wait (+0.1 s in the issue; the test allows CI more).
        assert time.monotonic() - accepting < 0.5 + 0.5
        assert client.connected
        assert client.reconnects == 1
        assert client.call_many(list(range(10))) == list(range(1, 11))


def test_a_stopped_server_times_out_every_kind_of_call_and_frees_the_window(open_client: OpenClient) -> None:
    with reqrep_process() as server:
        client = open_client(server.port, max_in_flight=1000)
        assert client.call(1) == 2
        os.kill(server.pid, signal.SIGSTOP)
        assert wait_until(lambda: stopped(server.pid))  # a group stop is not instant
        try:
            raises_within(2.0, RequestTimeout, lambda: client.call(1, timeout=0.3))
            raises_within(2.0, RequestTimeout, lambda: client.call_many(list(range(10)), timeout=0.3))
            # 8 MB: more than the socket buffers take, so the writes back up too.  The bound
            # leaves room for encoding 2M requests, the caller's own work, on a busy machine.
            raises_within(5.0, RequestTimeout, lambda: client.call_many(range(2_000_000), timeout=0.3))
            for number in range(10):
                raises_within(2.0, RequestTimeout, lambda n=number: client.call(n, timeout=0.1))
            assert client.in_flight == 0
        finally:
            os.kill(server.pid, signal.SIGCONT)
        assert client.call(7, timeout=10) == 8
        assert wait_until(lambda: client.late_replies >= 2_000_010)  # dropped, each counted


def test_a_peer_that_never_reads_cannot_hang_a_call(open_client: OpenClient, deaf: DeafServer) -> None:
    client = open_client(deaf.port, max_in_flight=1000)
    for _ in range(3):
        raises_within(2.0, RequestTimeout, lambda: client.call_many(range(100_000), timeout=0.3))
    for number in range(20):
        raises_within(2.0, RequestTimeout, lambda n=number: client.call(n, timeout=0.1))
    assert client.in_flight == 0


def test_a_full_window_times_out_within_the_call_s_timeout(
    open_client: OpenClient, silent: SilentServer
) -> None:
    client = open_client(silent.port, max_in_flight=100)
    pending, outcome = outcome_in_thread(lambda: client.call_many(list(range(100)), timeout=5))
    assert wait_until(lambda: client.in_flight == 100)
    error = raises_within(2.0, RequestTimeout, lambda: client.call(1, timeout=0.2))
    assert "no room in the in-flight window" in str(error)
    pending.join(10)
    assert isinstance(outcome[0], RequestTimeout)
    assert client.in_flight == 0


def test_without_reconnect_a_loss_closes_the_client(open_client: OpenClient) -> None:
    with reqrep_process() as server:
        client = open_client(server.port, reconnect=False)
        assert client.call(1) == 2
        os.kill(server.pid, signal.SIGKILL)
        assert wait_until(lambda: client.closed)
        assert not client.connected
        raises_within(1.0, ConnectionLost, lambda: client.call(1, timeout=5))


def test_reconnecting_gives_up_after_max_reconnects(open_client: OpenClient) -> None:
    reconnected: list[None] = []
    with reqrep_process() as server:
        client = open_client(
            server.port, reconnect_wait=0.05, max_reconnects=3, on_reconnect=lambda: reconnected.append(None)
        )
        assert client.call(1) == 2
        os.kill(server.pid, signal.SIGKILL)
        assert wait_until(lambda: client.closed)
    error = raises_within(1.0, ConnectionLost, lambda: client.call(1, timeout=5))
    assert "gave up reconnecting after 3 attempts" in str(error)
    assert reconnected == []


def test_close_is_final(open_client: OpenClient, silent: SilentServer) -> None:
    client = open_client(silent.port)
    pending, outcome = outcome_in_thread(lambda: client.call(1))
    assert wait_until(lambda: client.in_flight == 1)
    client.close()
    pending.join(5)
    assert [str(exc) for exc in outcome] == ["client closed"]
    assert client.closed
    assert not client.connected
    raises_within(1.0, ConnectionLost, lambda: client.call(1, timeout=5))


@pytest.fixture
def jsonl_server() -> Iterator[int]:
    server = create_reqrep_server(
        lambda n: "x" * n if isinstance(n, int) else n, "jsonl", port=0, max_frame=4096
    )
    server.start()
    yield server.port
    server.stop(1.0)


def test_the_client_learns_the_server_s_frame_limit_and_splits_to_it(
    open_client: OpenClient, jsonl_server: int
) -> None:
    client = open_client(jsonl_server, codec="jsonl")
    assert wait_until(lambda: client.frame_limit == 4096)  # from the server's HELLO
    documents = [{"text": "y" * 100, "n": n} for n in range(200)]  # about 24 kB: six frames or more
    assert client.call_many(documents) == documents
    huge = "z" * 5000
    error = raises_within(1.0, FrameTooLarge, lambda: client.call(huge))
    assert "over the server's limit of 4096 bytes" in str(error)
    raises_within(1.0, FrameTooLarge, lambda: client.call_many(["small", huge]))
    assert client.call("still fine") == "still fine"
    assert client.in_flight == 0


def test_a_reply_over_max_frame_fails_its_call_alone(open_client: OpenClient, jsonl_server: int) -> None:
    client = open_client(jsonl_server, codec="jsonl", max_frame=256)
    error = raises_within(2.0, FrameTooLarge, lambda: client.call(1000))  # a 1,003-byte reply
    assert "reply frame of" in str(error)
    assert client.call(3) == "xxx"
    assert client.connected


def test_a_pool_keeps_serving_when_one_of_three_servers_dies(open_pool: OpenClient) -> None:
    with reqrep_process() as first, reqrep_process() as second, reqrep_process() as third:
        addresses = [(server.host, server.port) for server in (first, second, third)]
        pool = open_pool(servers=addresses, size=3, reconnect_wait=0.2)
        assert [pool.call(n) for n in range(30)] == list(range(1, 31))
        os.kill(second.pid, signal.SIGKILL)
        assert wait_until(lambda: pool.connected == 2)
        assert [pool.call(n, timeout=5) for n in range(100)] == list(range(1, 101))
        assert pool.call_many(list(range(50)), timeout=5) == list(range(1, 51))
        with reqrep_process(addresses[1][1]):
            assert wait_until(lambda: pool.connected == 3)
            assert [pool.call(n, timeout=5) for n in range(30)] == list(range(1, 31))


def test_a_pool_passes_over_a_stopped_server_once_a_call_to_it_timed_out(open_pool: OpenClient) -> None:
    with reqrep_process() as first, reqrep_process() as second:
        pool = open_pool(servers=[(first.host, first.port), (second.host, second.port)], size=2)
        assert [pool.call(n) for n in range(4)] == list(range(1, 5))
        os.kill(second.pid, signal.SIGSTOP)
        assert wait_until(lambda: stopped(second.pid))
        try:
            outcomes = []
            for n in range(20):
                try:
                    outcomes.append(pool.call(n, timeout=0.3))
                except RequestTimeout:
                    outcomes.append(None)
            assert outcomes.count(None) <= 1  # the stalled one is tried once, then passed over
            assert pool.connected == 2  # a stopped server keeps its connection up
        finally:
            os.kill(second.pid, signal.SIGCONT)
        assert wait_until(lambda: all(not c.timeouts_in_a_row for c in pool.clients))  # late replies came


def unused_port() -> int:
    """A loopback port nothing listens on (just now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_retry_on_failed_connect_returns_a_client_that_dials_in_the_background(
    open_client: OpenClient,
) -> None:
    port = unused_port()
    reconnected: list[None] = []
    client = open_client(
        port, reconnect_wait=0.1, retry_on_failed_connect=True, on_reconnect=lambda: reconnected.append(None)
    )
    assert not client.connected
    assert isinstance(client.last_error, ConnectionRefusedError)
    error = raises_within(2, RequestTimeout, lambda: client.call(1, timeout=0.2))
    assert "not connected" in str(error)
    with reqrep_process(port):
        assert client.call(1, timeout=10) == 2
        assert client.connected
        assert client.reconnects == 1
        # on_reconnect runs on the client's callback thread, possibly after the call returned
        assert wait_until(lambda: reconnected == [None])


def test_a_pool_starts_on_its_live_servers_and_dials_the_others(open_pool: OpenClient) -> None:
    missing = unused_port()
    with reqrep_process() as live:
        pool = open_pool(servers=[(live.host, live.port), ("127.0.0.1", missing)], size=2, reconnect_wait=0.1)
        assert pool.connected == 1
        assert [pool.call(n, timeout=5) for n in range(20)] == list(range(1, 21))
        with reqrep_process(missing):
            assert wait_until(lambda: pool.connected == 2)
            assert [pool.call(n, timeout=5) for n in range(20)] == list(range(1, 21))


def test_a_pool_with_no_reachable_server_raises_why(open_pool: OpenClient) -> None:
    with pytest.raises(ConnectionRefusedError):
        open_pool(servers=[("127.0.0.1", unused_port()), ("127.0.0.1", unused_port())], size=2)


def test_cancelled_calls_free_their_slots_at_once(silent: SilentServer) -> None:
    async def main() -> None:
        async with await Client.connect(port=silent.port, max_in_flight=1000) as client:
            for number in range(1000):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(client.call(number), 0.001)
            assert client.in_flight == 0
            with pytest.raises(RequestTimeout, match="no reply"):
                await client.call(1, timeout=0.2)  # the window is free: the call is sent
            calls = [asyncio.ensure_future(client.call(n)) for n in range(3000)]  # 2,000 wait for room
            batches = [asyncio.ensure_future(client.call_many(list(range(400)))) for _ in range(5)]
            await asyncio.sleep(0.05)
            for task in (*calls, *batches):
                task.cancel()
            await asyncio.gather(*calls, *batches, return_exceptions=True)
            assert client.in_flight == 0
            with pytest.raises(RequestTimeout, match="no reply"):
                await client.call(1, timeout=0.2)

    asyncio.run(asyncio.wait_for(main(), 60))


def test_pools_are_async_context_managers() -> None:
    server = create_reqrep_server(increment_service("int32", "item"), "int32", port=0)
    server.start()

    async def main() -> None:
        async with await ClientPool.connect(port=server.port, size=2) as pool:
            assert await pool.call(1) == 2
            assert pool.connected == 2
        assert all(client.closed for client in pool.clients)

    try:
        asyncio.run(asyncio.wait_for(main(), 30))
    finally:
        server.stop(1.0)


def test_a_reset_mid_batch_fails_every_pending_call_fast(
    open_client: OpenClient, silent: SilentServer
) -> None:
    client = open_client(silent.port)
    singles = [outcome_in_thread(lambda n=n: client.call(n)) for n in range(20)]
    batch = outcome_in_thread(lambda: client.call_many(list(range(5000))))
    assert wait_until(lambda: silent.received >= 20 * 4 + 5000 * 4)
    silent.reset()
    # No call has a timeout: a call the reset did not fail would wait forever. 10 s, not
    # less: a loaded CI machine once took over 2 s to run one of these threads again.
    for thread, _ in (*singles, batch):
        thread.join(10)
    outcomes = [outcome for _, outcome in (*singles, batch)]
    assert all(outcome and isinstance(outcome[0], ConnectionLost) for outcome in outcomes), outcomes
    assert client.in_flight == 0
    assert wait_until(lambda: not client.connected)
    assert not client.closed  # reconnecting: a new call waits for the connection, within its timeout
    error = raises_within(1.0, RequestTimeout, lambda: client.call(1, timeout=0.2))
    assert "not connected" in str(error)
