"""The asyncio NATS client against a real nats-server: every test is bounded in time."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import railcar.nats as rn
from railcar.errors import ProtocolError
from railcar.nats import Headers, Msg
from tests.nats.server import NatsServer

StartNats = Callable[..., NatsServer]


def run(coro: Coroutine[Any, Any, Any], timeout: float = 20.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def connect(server: NatsServer, **options: Any) -> rn.Client:
    return await rn.connect(server.url, name="railcar-test", **options)


def test_pub_sub_round_trip_with_callback_and_iterator(nats_server: NatsServer) -> None:
    async def body() -> None:
        async with await connect(nats_server) as nc:
            got: list[Msg] = []
            await nc.subscribe("rt.cb", cb=got.append)
            sub = await nc.subscribe("rt.*")
            for i in range(100):
                await nc.publish("rt.cb", b"%d" % i)
            await nc.publish("rt.other", b"x", reply="rt.reply")
            await nc.flush()
            received = [await sub.next_msg(5) for _ in range(101)]
            await asyncio.sleep(0.05)
            assert [m.data for m in got] == [b"%d" % i for i in range(100)]
            assert received[-1].subject == "rt.other"
            assert received[-1].reply == "rt.reply"
            assert all(m.subject == "rt.cb" for m in got)

    run(body())


def test_headers_round_trip(nats_server: NatsServer) -> None:
    async def body() -> None:
        async with await connect(nats_server) as nc:
            sub = await nc.subscribe("hdr")
            await nc.publish("hdr", b"body", headers={"Trace": "1", "Multi": ["a", "b"]})
            await nc.publish("hdr", b"", headers=Headers([("Only", "header")]))
            first = await sub.next_msg(5)
            second = await sub.next_msg(5)
            assert first.data == b"body"
            assert first.headers is not None
            assert first.headers["Trace"] == "1"
            assert first.headers.get_all("Multi") == ["a", "b"]
            assert second.data == b""
            assert second.headers is not None
            assert second.headers["Only"] == "header"

    run(body())


def test_a_publisher_s_bad_headers_are_reported_and_lose_only_that_message(nats_server: NatsServer) -> None:
    async def body() -> None:
        errors: list[BaseException] = []
        async with await connect(nats_server, error_cb=errors.append) as nc:
            sub = await nc.subscribe("hdr.bad")
            await nc.flush()
            # nats-server forwards header blocks unchecked: a raw publisher sends a broken one.
            reader, writer = await asyncio.open_connection("127.0.0.1", nats_server.port)
            await reader.readline()  # INFO
            block = b"NATS/1.0\r\nno-colon-here\r\n\r\n"
            writer.write(
                b'CONNECT {"headers":true,"verbose":false}\r\nHPUB hdr.bad %d %d\r\n%s\r\nPING\r\n'
                % (len(block), len(block), block)
            )
            assert await reader.readline() == b"PONG\r\n"
            writer.close()
            await nc.publish("hdr.bad", b"after")
            assert (await sub.next_msg(5)).data == b"after"
            assert nc.reconnects == 0
            assert len(errors) == 1
            assert isinstance(errors[0], rn.BadHeaders)
            assert "bad header line 'no-colon-here'" in str(errors[0])

    run(body())


def test_several_readers_of_one_subscription_each_get_messages(nats_server: NatsServer) -> None:
    async def body() -> None:
        async with await connect(nats_server) as nc:
            sub = await nc.subscribe("readers")
            for _ in range(50):  # readers that time out leave nothing behind
                with pytest.raises(TimeoutError):
                    await sub.next_msg(0.001)
            readers = [asyncio.ensure_future(sub.next_msg(5)) for _ in range(3)]
            await asyncio.sleep(0.05)
            for i in range(3):
                await nc.publish("readers", b"%d" % i)
            got = await asyncio.gather(*readers)
            assert sorted(m.data for m in got) == [b"0", b"1", b"2"]
            assert sub.pending_msgs == 0

    run(body())


def test_queue_group_spreads_and_delivers_once(nats_server: NatsServer) -> None:
    async def body() -> None:
        async with await connect(nats_server) as nc:
            counts = [0, 0, 0]

            def counter(i: int) -> Callable[[Msg], None]:
                def cb(_: Msg) -> None:
                    counts[i] += 1

                return cb

            for i in range(3):
                await nc.subscribe("work", queue="workers", cb=counter(i))
            for _ in range(300):
                await nc.publish("work", b"job")
            await nc.flush()
            await asyncio.sleep(0.1)
            assert sum(counts) == 300
            assert all(count > 0 for count in counts)

    run(body())


def test_auto_unsubscribe_after_n(nats_server: NatsServer) -> None:
    async def body() -> None:
        async with await connect(nats_server) as nc:
            sub = await nc.subscribe("auto", max_msgs=3)
            later = await nc.subscribe("auto.later")
            await later.unsubscribe(after=2)
            for i in range(10):
                await nc.publish("auto", b"%d" % i)
                await nc.publish("auto.later", b"%d" % i)
            await nc.flush()
            assert [m.data async for m in sub] == [b"0", b"1", b"2"]
            assert [m.data async for m in later] == [b"0", b"1"]

    run(body())


def test_unsubscribe_ends_the_iterator(nats_server: NatsServer) -> None:
    async def body() -> None:
        async with await connect(nats_server) as nc:
            sub = await nc.subscribe("gone")
            await nc.publish("gone", b"1")
            await nc.flush()
            await sub.unsubscribe()
            await nc.publish("gone", b"2")
            await nc.flush()
            assert [m.data async for m in sub] == [b"1"]

    run(body())


def test_request_reply_and_no_responders(nats_server: NatsServer) -> None:
    async def body() -> None:
        async with await connect(nats_server) as nc:

            async def echo(msg: Msg) -> None:
                await nc.publish(msg.reply, msg.data.upper(), headers={"Seen": msg.subject})

            await nc.subscribe("svc.echo", cb=echo)
            replies = await asyncio.gather(*(nc.request("svc.echo", b"hi %d" % i, 5) for i in range(200)))
            assert [r.data for r in replies] == [b"HI %d" % i for i in range(200)]
            assert replies[0].headers is not None
            assert replies[0].headers["Seen"] == "svc.echo"
            started = time.monotonic()
            with pytest.raises(rn.NoResponders, match=r"svc\.nobody"):
                await nc.request("svc.nobody", b"x", timeout=5)
            assert time.monotonic() - started < 2  # at once, not at the timeout

    run(body())


def test_request_timeout_and_late_reply(nats_server: NatsServer) -> None:
    async def body() -> None:
        async with await connect(nats_server) as nc:

            async def slow(msg: Msg) -> None:
                await asyncio.sleep(0.3)
                await nc.publish(msg.reply, b"late")

            await nc.subscribe("svc.slow", cb=slow)
            started = time.monotonic()
            with pytest.raises(rn.RequestTimeout, match=r"no reply on 'svc\.slow' within 0\.1 s"):
                await nc.request("svc.slow", b"x", timeout=0.1)
            assert time.monotonic() - started < 1
            await asyncio.sleep(0.5)
            assert nc.late_replies == 1

    run(body())


def test_flush_and_max_payload(start_nats: StartNats) -> None:
    server = start_nats("max_payload: 1024\n")

    async def body() -> None:
        async with await connect(server) as nc:
            assert nc.max_payload == 1024
            sub = await nc.subscribe("big")
            await nc.publish("big", b"x" * 1024)
            with pytest.raises(
                rn.MaxPayloadExceeded, match="1025 bytes is over the server's max_payload of 1024"
            ):
                await nc.publish("big", b"x" * 1025)
            with pytest.raises(rn.MaxPayloadExceeded):
                await nc.publish("big", b"x" * 1000, headers={"K": "v" * 100})
            await nc.flush(5)
            assert (await sub.next_msg(5)).data == b"x" * 1024
            assert nc.connected

    run(body())


def test_invalid_subjects_are_refused_before_sending(nats_server: NatsServer) -> None:
    async def body() -> None:
        async with await connect(nats_server) as nc:
            for bad in ["", "a b", "a..b", ".a"]:
                with pytest.raises(rn.InvalidSubject):
                    await nc.publish(bad, b"x")
                with pytest.raises(rn.InvalidSubject):
                    await nc.subscribe(bad)
            with pytest.raises(rn.InvalidSubject):
                await nc.subscribe("ok", queue="bad queue")
            await nc.flush(5)

    run(body())


def test_slow_consumer_is_reported_not_silent(nats_server: NatsServer) -> None:
    async def body() -> None:
        errors: list[BaseException] = []
        async with await connect(nats_server, error_cb=errors.append) as nc:
            sub = await nc.subscribe("flood", pending_msgs=10)
            for i in range(50):
                await nc.publish("flood", b"%d" % i)
            await nc.flush(5)
            assert sub.pending_msgs == 10
            assert sub.dropped == 40
            await asyncio.sleep(0.01)
            assert len(errors) == 1  # once per episode
            assert isinstance(errors[0], rn.SlowConsumer)
            assert "flood" in str(errors[0])
            assert [(await sub.next_msg(1)).data for _ in range(10)] == [b"%d" % i for i in range(10)]
            # caught up: a new episode is reported again
            for i in range(12):
                await nc.publish("flood", b"%d" % i)
            await nc.flush(5)
            await asyncio.sleep(0.01)
            assert len(errors) == 2
            bytes_sub = await nc.subscribe("flood.bytes", pending_bytes=100)
            for _ in range(3):
                await nc.publish("flood.bytes", b"x" * 40)
            await nc.flush(5)
            assert (bytes_sub.pending_msgs, bytes_sub.pending_bytes, bytes_sub.dropped) == (2, 80, 1)

    run(body())


def test_permissions_error_is_surfaced_and_the_connection_stays(start_nats: StartNats) -> None:
    config = """
authorization {
  users = [
    {user: "app", password: "secret", permissions: {publish: {deny: ["forbidden.>"]}}}
  ]
}
"""
    server = start_nats(config)

    async def body() -> None:
        errors: list[BaseException] = []
        async with await connect(server, user="app", password="secret", error_cb=errors.append) as nc:
            await nc.publish("forbidden.x", b"no")
            await nc.flush(5)
            await asyncio.sleep(0.05)
            assert any(isinstance(e, rn.ServerError) and "Permissions Violation" in str(e) for e in errors)
            assert nc.connected
            sub = await nc.subscribe("allowed")
            await nc.publish("allowed", b"yes")
            assert (await sub.next_msg(5)).data == b"yes"
        with pytest.raises(rn.AuthorizationError, match="Authorization Violation"):
            await connect(server, user="app", password="wrong", reconnect=False)
        async with await rn.connect(f"nats://app:secret@127.0.0.1:{server.port}") as nc:
            await nc.flush(5)

    run(body())


def test_token_auth(start_nats: StartNats) -> None:
    server = start_nats("authorization { token: s3cret }\n")

    async def body() -> None:
        async with await connect(server, token="s3cret") as nc:
            await nc.flush(5)
        async with await rn.connect(f"nats://s3cret@127.0.0.1:{server.port}") as nc:
            await nc.flush(5)
        with pytest.raises(rn.AuthorizationError):
            await connect(server, token="nope")

    run(body())


def test_unreachable_server_fails_to_connect_within_timeout() -> None:
    async def body() -> None:
        started = time.monotonic()
        with pytest.raises(OSError, match=r"refused|failed"):
            await rn.connect("nats://127.0.0.1:1", connect_timeout=2)
        assert time.monotonic() - started < 3
        with pytest.raises(ValueError, match="bad NATS URL"):
            await rn.connect("http://127.0.0.1:4222")

    run(body())


def test_server_killed_fails_pending_calls_and_reconnects(start_nats: StartNats) -> None:
    server = start_nats()

    async def body() -> None:
        events: list[str] = []
        nc = await connect(
            server,
            reconnect_wait=0.1,
            on_disconnect=lambda e: events.append("disconnected"),
            on_reconnect=lambda: events.append("reconnected"),
        )
        try:
            sub = await nc.subscribe("survive")
            await nc.subscribe("svc.never", cb=lambda m: None)  # never answers
            pending = asyncio.ensure_future(nc.request("svc.never", b"x", timeout=10))
            await nc.flush(5)
            started = time.monotonic()
            server.kill()
            with pytest.raises(rn.ConnectionLost):
                await pending
            assert time.monotonic() - started < 2
            with pytest.raises(rn.RequestTimeout, match="not connected"):
                await nc.flush(0.2)
            await nc.publish("survive", b"while away")  # kept in the pending buffer
            assert nc.pending_bytes > 0
            server.start()  # same port
            for _ in range(100):
                if nc.connected:
                    break
                await asyncio.sleep(0.05)
            assert nc.connected
            await nc.publish("survive", b"after")
            await nc.flush(5)
            assert (await sub.next_msg(5)).data == b"while away"  # resubscribed before the pending buffer
            assert (await sub.next_msg(5)).data == b"after"
            assert events == ["disconnected", "reconnected"]
            assert nc.reconnects == 1
        finally:
            await nc.close()

    run(body(), 30)


def _lose_unread(server: NatsServer) -> None:
    """Freeze the server (what reaches it now stays unread), then kill it: the unread bytes are gone."""
    server.freeze()
    server.kill()


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached within 4 s")


def test_a_flush_reports_publishes_lost_with_their_connection_once(start_nats: StartNats) -> None:
    server = start_nats()

    async def body() -> None:
        nc = await connect(server, reconnect_wait=0.05)
        try:
            sub = await nc.subscribe("at.risk")
            await nc.flush(5)
            # Written before the loss, never read: a flush begun after the reconnection must not vouch for it.
            server.freeze()
            await nc.publish("at.risk", b"lost")
            await asyncio.sleep(0)
            assert nc.pending_bytes == 0  # handed to the transport
            _lose_unread(server)
            await _until(lambda: not nc.connected)
            server.start()
            await _until(lambda: nc.connected)
            with pytest.raises(rn.ConnectionLost, match="may be lost"):
                await nc.flush(5)
            await nc.publish("at.risk", b"kept")
            await nc.flush(5)  # reported once: this one vouches for "kept" alone
            assert (await sub.next_msg(5)).data == b"kept"

            # A flush waiting at the loss fails itself, and the next one is not told again.
            server.freeze()
            await nc.publish("at.risk", b"lost too")
            waiting = asyncio.ensure_future(nc.flush(10))
            await asyncio.sleep(0.05)
            _lose_unread(server)
            with pytest.raises(rn.ConnectionLost):
                await waiting
            server.start()
            await nc.publish("at.risk", b"after")
            await nc.flush(5)
            assert (await sub.next_msg(5)).data == b"after"
            # Requests lost with a connection fail by themselves: no flush reports them.
            await nc.subscribe("svc.quiet", cb=lambda m: None)
            await nc.flush(5)
            server.freeze()
            request = asyncio.ensure_future(nc.request("svc.quiet", b"?", timeout=10))
            await asyncio.sleep(0.05)
            _lose_unread(server)
            with pytest.raises(rn.ConnectionLost):
                await request
            server.start()
            await nc.flush(5)
        finally:
            await nc.close()

    run(body(), 30)


def test_max_reconnects_counts_attempts_per_server() -> None:
    dials = {"a": 0, "b": 0}

    async def server_a(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        dials["a"] += 1
        if dials["a"] == 1:  # the first connection is served, then dropped
            writer.write(b'INFO {"max_payload":1024}\r\n')
            await reader.readline()  # CONNECT
            await reader.readline()  # PING
            writer.write(b"PONG\r\n")
            await asyncio.sleep(0.05)
        writer.close()

    async def server_b(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        dials["b"] += 1
        writer.close()

    async def body() -> None:
        a, a_done = await fake_server(server_a)
        b, b_done = await fake_server(server_b)
        closed = asyncio.Event()
        urls = [f"nats://127.0.0.1:{s.sockets[0].getsockname()[1]}" for s in (a, b)]
        try:
            nc = await rn.connect(
                urls, randomize=False, reconnect_wait=0.01, max_reconnects=3, closed_cb=closed.set
            )
            await asyncio.wait_for(closed.wait(), 10)
            assert dials == {"a": 1 + 3, "b": 3}  # 3 attempts each, as nats.go counts them
            with pytest.raises(rn.ConnectionLost, match=r"after 6 attempts \(max_reconnects=3 per server\)"):
                await nc.publish("x", b"")
        finally:
            await stop_fake(a, a_done)
            await stop_fake(b, b_done)

    run(body())


def test_requests_in_flight_are_bounded(nats_server: NatsServer) -> None:
    async def body() -> None:
        async with await connect(nats_server, max_in_flight=3) as nc:
            await nc.subscribe("svc.silent", cb=lambda m: None)
            await nc.subscribe("svc.echo", cb=lambda m: nc.publish(m.reply, m.data))
            await nc.flush(5)
            waiting = [asyncio.ensure_future(nc.request("svc.silent", b"?", timeout=10)) for _ in range(3)]
            await asyncio.sleep(0)
            with pytest.raises(rn.InFlightLimit, match=r"3 requests are waiting .*max_in_flight=3"):
                await nc.request("svc.echo", b"one more", timeout=5)
            for future in waiting:
                future.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)
            assert (await nc.request("svc.echo", b"room again", timeout=5)).data == b"room again"
        with pytest.raises(ValueError, match="max_in_flight >= 1"):
            await connect(nats_server, max_in_flight=0)

    run(body())


def test_pending_buffer_is_bounded_while_disconnected(start_nats: StartNats) -> None:
    server = start_nats()

    async def body() -> None:
        nc = await connect(server, reconnect_wait=30, pending_size=1000)
        try:
            server.kill()
            for _ in range(100):
                if not nc.connected:
                    break
                await asyncio.sleep(0.02)
            for _ in range(10):
                await nc.publish("p", b"x" * 80)
            assert nc.pending_bytes == 920  # 10 x "PUB p 80" + CRLF + payload + CRLF
            with pytest.raises(rn.OutboundBufferFull, match="pending_size=1000"):
                await nc.publish("p", b"x" * 80)
            assert nc.pending_bytes <= 1000
        finally:
            await nc.close()

    run(body())


def test_no_reconnect_closes_and_fails_everything(start_nats: StartNats) -> None:
    server = start_nats()

    async def body() -> None:
        closed: list[bool] = []
        nc = await connect(server, reconnect=False, closed_cb=lambda: closed.append(True))
        sub = await nc.subscribe("x")
        server.kill()
        assert [m async for m in sub] == []  # the iterator ends
        assert nc.closed
        assert closed == [True]
        with pytest.raises(rn.ConnectionLost):
            await nc.publish("x", b"1")
        with pytest.raises(rn.ConnectionLost):
            await nc.request("x", b"1", timeout=5)

    run(body())


def test_stale_connection_is_detected_by_pings(start_nats: StartNats) -> None:
    server = start_nats()

    async def body() -> None:
        disconnects: list[BaseException] = []
        nc = await connect(
            server,
            ping_interval=0.1,
            max_outstanding_pings=2,
            reconnect_wait=0.1,
            on_disconnect=disconnects.append,
        )
        try:
            assert server.proc is not None
            server.proc.send_signal(signal.SIGSTOP)
            try:
                for _ in range(100):
                    if disconnects:
                        break
                    await asyncio.sleep(0.05)
            finally:
                server.proc.send_signal(signal.SIGCONT)
            assert disconnects
            assert "stale connection" in str(disconnects[0])
            for _ in range(100):
                if nc.connected:
                    break
                await asyncio.sleep(0.05)
            await nc.flush(5)
        finally:
            await nc.close()

    run(body())


def test_drain_handles_what_was_in_flight(nats_server: NatsServer) -> None:
    async def body() -> None:
        nc = await connect(nats_server)
        got: list[bytes] = []

        async def handler(msg: Msg) -> None:
            await asyncio.sleep(0)
            got.append(msg.data)

        await nc.subscribe("drain", cb=handler)
        other = await connect(nats_server)
        for i in range(500):
            await other.publish("drain", b"%d" % i)
        await other.flush(5)
        await nc.drain(5)
        assert nc.closed
        assert got == [b"%d" % i for i in range(500)]
        await other.close()

    run(body())


async def fake_server(script: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]) -> Any:
    """A stand-in server running ``script`` per connection; its connections are closed on exit."""
    done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await script(reader, writer)
            await done.wait()
        finally:
            writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0)
    return listener, done


async def stop_fake(listener: asyncio.Server, done: asyncio.Event) -> None:
    done.set()
    listener.close()
    await listener.wait_closed()
    await asyncio.sleep(0.01)


def test_garbage_from_the_server_is_a_clear_error() -> None:
    async def after_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b'INFO {"max_payload":1024}\r\n')
        await reader.readline()  # CONNECT
        await reader.readline()  # PING
        writer.write(b"PONG\r\n")
        await asyncio.sleep(0.2)
        writer.write(b"WHAT IS THIS\r\n")

    async def in_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"INFO {not json\r\n")

    async def body() -> None:
        listener, done = await fake_server(after_handshake)
        port = listener.sockets[0].getsockname()[1]
        errors: list[BaseException] = []
        try:
            nc = await rn.connect(f"nats://127.0.0.1:{port}", reconnect=False, error_cb=errors.append)
            for _ in range(100):
                if nc.closed:
                    break
                await asyncio.sleep(0.02)
            assert nc.closed
            await asyncio.sleep(0.01)
            assert any("unknown operation" in str(e) for e in errors)
            with pytest.raises(rn.ConnectionLost, match="unknown operation"):
                await nc.publish("x", b"")
        finally:
            await stop_fake(listener, done)
        listener, done = await fake_server(in_handshake)
        port = listener.sockets[0].getsockname()[1]
        try:
            with pytest.raises(ProtocolError, match="INFO is not JSON"):
                await rn.connect(f"nats://127.0.0.1:{port}", reconnect=False)
        finally:
            await stop_fake(listener, done)

    run(body())


def test_handshake_timeout_on_a_silent_server() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        return

    async def body() -> None:
        listener, done = await fake_server(silent)
        port = listener.sockets[0].getsockname()[1]
        try:
            started = time.monotonic()
            with pytest.raises(TimeoutError, match="no NATS handshake"):
                await rn.connect(f"nats://127.0.0.1:{port}", connect_timeout=0.3)
            assert time.monotonic() - started < 2
        finally:
            await stop_fake(listener, done)

    run(body())


def test_publishes_of_one_turn_go_out_in_one_write(nats_server: NatsServer) -> None:
    async def body() -> None:
        async with await connect(nats_server) as nc:
            sub = await nc.subscribe("coalesce")
            conn = nc._conn
            assert conn is not None
            real = conn.transport
            writes: list[bytes] = []

            class Counting:
                def write(self, data: bytes) -> None:
                    writes.append(data)
                    real.write(data)  # type: ignore[union-attr]

                def __getattr__(self, name: str) -> Any:
                    return getattr(real, name)

            conn.transport = Counting()  # type: ignore[assignment]
            for i in range(1000):  # one turn of one task
                await nc.publish("coalesce", b"%d" % i)
            # 100 tasks whose first steps share the next turn (the flusher of this one runs first)
            await asyncio.gather(*(nc.publish("coalesce", b"task") for _ in range(100)))
            await asyncio.sleep(0)
            assert [w.count(b"PUB coalesce ") for w in writes] == [1000, 100]
            await nc.flush(5)
            assert writes[-1] == b"PING\r\n"
            assert [(await sub.next_msg(5)).data for _ in range(1100)][:1000] == [
                b"%d" % i for i in range(1000)
            ]

    run(body())


def test_a_stopped_server_cannot_hang_calls_past_their_timeouts(start_nats: StartNats) -> None:
    server = start_nats()

    async def body() -> None:
        async with await connect(server) as nc:
            await nc.subscribe("svc.any", cb=lambda m: None)
            await nc.flush(5)
            assert server.proc is not None
            server.proc.send_signal(signal.SIGSTOP)
            try:
                started = time.monotonic()
                with pytest.raises(rn.RequestTimeout, match="no reply"):
                    await nc.request("svc.any", b"x", timeout=0.3)
                with pytest.raises(rn.RequestTimeout, match="no PONG"):
                    await nc.flush(0.3)
                assert time.monotonic() - started < 2
                # Fill the socket buffers until the transport pauses: every wait then has a bound.
                big = b"x" * 60_000
                while not await _paused_after_publish(nc, big):
                    pass
                for call in (
                    nc.publish("svc.any", big, timeout=0.3),
                    nc.request("svc.any", b"x", timeout=0.3),
                    nc.request_many("svc.any", b"x", timeout=0.3),
                ):
                    started = time.monotonic()
                    with pytest.raises(rn.RequestTimeout, match="took no more writes"):
                        await call
                    assert time.monotonic() - started < 2
            finally:
                server.proc.send_signal(signal.SIGCONT)
            await nc.flush(10)

    run(body(), timeout=60)


async def _paused_after_publish(nc: rn.Client, payload: bytes) -> bool:
    """Publish once; True if that left the transport paused (a publish then has to wait)."""
    try:
        await nc.publish("svc.any", payload, timeout=0.05)
    except rn.RequestTimeout:
        return True
    return False


def test_request_many_by_count_timeout_and_sentinel(nats_server: NatsServer) -> None:
    async def body() -> None:
        async with await connect(nats_server) as nc:

            def responder(name: bytes) -> Callable[[Msg], Coroutine[Any, Any, None]]:
                async def answer(msg: Msg) -> None:
                    await nc.publish(msg.reply, name)

                return answer

            for name in (b"a", b"b", b"c"):
                await nc.subscribe("many", cb=responder(name))

            async def streamer(msg: Msg) -> None:
                for part in (b"1", b"2", b""):  # an empty reply ends the stream
                    await nc.publish(msg.reply, part)

            await nc.subscribe("stream", cb=streamer)
            await nc.flush(5)
            two = await nc.request_many("many", b"?", timeout=5, max_msgs=2)
            assert len(two) == 2
            started = time.monotonic()
            every = await nc.request_many("many", b"?", timeout=0.3)
            assert 0.25 < time.monotonic() - started < 2
            assert sorted(m.data for m in every) == [b"a", b"b", b"c"]
            parts = await nc.request_many("stream", timeout=5, sentinel=lambda m: not m.data)
            assert [m.data for m in parts] == [b"1", b"2"]
            with pytest.raises(rn.NoResponders):
                await nc.request_many("nobody.home", timeout=5)

    run(body())
