"""Request–response over every engine: async and sync clients, errors, limits, lost servers."""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from railcar.apps.echo import EchoHandler
from railcar.apps.increment import increment_service
from railcar.codecs import RECORD_276, codec_factory
from railcar.errors import (
    CodecError,
    ConnectionLost,
    InFlightLimit,
    ProtocolError,
    RemoteError,
    RequestTimeout,
)
from railcar.proto.reqrep import (
    CONN_ERROR,
    ERROR,
    HEADER,
    HELLO,
    REPLY,
    REPLY_IDS,
    REQUEST,
    FrameReader,
    append_frame,
    decode_errors,
    decode_hello,
    decode_replies,
    encode_conn_error,
    encode_hello,
    encode_run_errors,
)
from railcar.reqrep import Client, ClientPool, create_reqrep_server, sync
from railcar.reqrep.sync import SyncClient
from tests.conftest import ServerFactory
from tests.helpers import connect, recv_until_eof
from tests.reqrep.conftest import SilentServer

Serve = Callable[..., int]


@pytest.fixture
def serve_reqrep(engine: str) -> Iterator[Serve]:
    servers = []

    def start(service: Callable[..., Any], codec: str = "int32", **options: Any) -> int:
        server = create_reqrep_server(service, codec, engine=engine, port=0, **options)
        server.start()
        servers.append(server)
        return server.port

    yield start
    for server in servers:
        server.stop(1.0)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_calls_from_many_tasks_share_frames(serve_reqrep: Serve) -> None:
    port = serve_reqrep(increment_service("int32", "item"))

    async def main() -> list[int]:
        async with await Client.connect(port=port) as client:
            assert await client.call(41) == 42
            return list(await asyncio.gather(*(client.call(i) for i in range(3000))))

    assert run(main()) == [i + 1 for i in range(3000)]


@pytest.mark.parametrize("mode", ["item", "batch", "array"])
def test_call_many_in_every_mode(serve_reqrep: Serve, mode: str) -> None:
    port = serve_reqrep(increment_service("int32", mode), mode=mode)  # type: ignore[arg-type]

    async def main() -> list[int]:
        async with await Client.connect(port=port, batch_size=1000) as client:
            return await client.call_many(list(range(-2500, 2500)))

    assert run(main()) == [i + 1 for i in range(-2500, 2500)]


def test_struct276_records_vectorised(serve_reqrep: Serve) -> None:
    port = serve_reqrep(increment_service("struct276", "array"), "struct276", mode="array")
    records = np.zeros(300, dtype=RECORD_276)
    records["id"] = np.arange(300)
    records["flags"] = 7
    records["values"] = 1.5
    records["tag"] = b"railcar"

    async def main() -> list[Any]:
        async with await Client.connect(port=port, codec="struct276") as client:
            return await client.call_many(records.tolist())

    replies = run(main())
    assert [r[0] for r in replies] == list(range(300))
    assert {r[3] for r in replies} == {8}
    assert all(r[5] == b"railcar" for r in replies)


@pytest.mark.parametrize("codec", ["jsonl", "msgpack"])
def test_structured_codecs_echo(serve_reqrep: Serve, codec: str) -> None:
    port = serve_reqrep(increment_service(codec, "item"), codec)
    documents = [{"n": i, "name": f"item {i}", "tags": ["a", "b"][: i % 3]} for i in range(500)]

    async def main() -> tuple[Any, list[Any]]:
        async with await Client.connect(port=port, codec=codec) as client:
            return await client.call({"hello": "world"}), await client.call_many(documents)

    single, many = run(main())
    assert single == {"hello": "world"}
    assert many == documents


def failing_on_13(number: int) -> int:
    if number == 13:
        raise ValueError("unlucky number")
    return number * 2


def test_a_failing_request_fails_alone(serve_reqrep: Serve) -> None:
    port = serve_reqrep(failing_on_13)

    async def main() -> None:
        async with await Client.connect(port=port) as client:
            results = await asyncio.gather(*(client.call(i) for i in range(10, 16)), return_exceptions=True)
            assert results[:3] == [20, 22, 24]
            assert isinstance(results[3], RemoteError)
            assert "unlucky number" in str(results[3])
            assert results[4:] == [28, 30]
            with pytest.raises(RemoteError, match="unlucky"):
                await client.call_many(list(range(20)))
            assert await client.call(2) == 4

    run(main())


def test_async_service_replies_out_of_order(engine: str, serve_reqrep: Serve) -> None:
    if engine not in ("asyncio", "uvloop"):
        pytest.skip("async services run on the asyncio engines")

    async def slow_for_small(number: int) -> int:
        await asyncio.sleep(0.05 if number < 5 else 0)
        return -number

    port = serve_reqrep(slow_for_small)
    order: list[int] = []

    async def main() -> list[int]:
        async with await Client.connect(port=port) as client:

            async def tracked(n: int) -> int:
                reply = await client.call(n)
                order.append(n)
                return reply

            first = [asyncio.create_task(tracked(n)) for n in range(5)]
            await asyncio.sleep(0.01)
            later = [asyncio.create_task(tracked(n)) for n in range(5, 10)]
            return list(await asyncio.gather(*first, *later))

    assert run(main()) == [-n for n in range(10)]
    assert order[:5] == [5, 6, 7, 8, 9]


def raw_request(sock: socket.socket, payload: bytes, count: int, first_id: int = 1) -> None:
    sock.sendall(HEADER.pack(13 + len(payload), REQUEST, count, first_id) + payload)


def read_frames(sock: socket.socket, wanted: int) -> list[Any]:
    reader, frames = FrameReader(), []
    while len(frames) < wanted:
        chunk = sock.recv(65536)
        if not chunk:
            break
        frames += reader.feed(chunk)
    return frames


def test_undecodable_frame_fails_its_requests_and_keeps_the_connection(serve_reqrep: Serve) -> None:
    port = serve_reqrep(increment_service("int32", "item"))
    with connect(port) as sock:
        raw_request(sock, b"\x01\x00\x00", count=1, first_id=5)  # 3 bytes: not an int32
        (error,) = read_frames(sock, 1)
        assert error.kind == ERROR
        [(request_id, count, message)] = decode_errors(error)
        assert (request_id, count) == (5, 1)
        assert "bad request" in message
        raw_request(sock, struct.pack("<i", 9), count=1, first_id=6)
        (reply,) = read_frames(sock, 1)
        assert (reply.kind, reply.first_id, reply.payload) == (REPLY, 6, struct.pack("<i", 10))


def test_array_frames_of_one_read_are_answered_frame_by_frame(serve_reqrep: Serve) -> None:
    calls: list[int] = []

    def increment(numbers: Any) -> Any:
        calls.append(len(numbers))
        return numbers + np.int32(1)

    port = serve_reqrep(increment, mode="array")
    good = [np.arange(start, start + 3, dtype="<i4") for start in (0, 100, 200)]
    frames = [
        HEADER.pack(13 + 12, REQUEST, 3, 1) + good[0].tobytes(),
        HEADER.pack(13 + 5, REQUEST, 2, 4) + b"\x00" * 5,  # 5 bytes are not two int32
        HEADER.pack(13 + 12, REQUEST, 3, 6) + good[1].tobytes(),
        HEADER.pack(13 + 12, REQUEST, 3, 9) + good[2].tobytes(),
        HEADER.pack(13, REPLY, 0, 0),  # a client never sends REPLY: the connection ends after the rest
    ]
    with connect(port) as sock:
        sock.sendall(b"".join(frames))
        replies = read_frames(sock, 5)
    by_kind = {kind: [f for f in replies if f.kind == kind] for kind in (REPLY, ERROR, CONN_ERROR)}
    assert [(f.first_id, np.frombuffer(f.payload, "<i4").tolist()) for f in by_kind[REPLY]] == [
        (first_id, (numbers + 1).tolist()) for first_id, numbers in zip((1, 6, 9), good, strict=True)
    ]
    assert [(first, count) for f in by_kind[ERROR] for first, count, _ in decode_errors(f)] == [(4, 2)]
    assert len(by_kind[CONN_ERROR]) == 1
    assert sum(calls) == 9  # the service saw every good record once, however the reads split them


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff" * 64,
        HEADER.pack(13, 42, 0, 0),
        HEADER.pack(100_000, REPLY, 1, 1),  # over the limit, and no kind a client sends
        HEADER.pack(100_000, REQUEST, 200_000, 1),  # over the limit, and its header lies: not skipped
        HEADER.pack(100_000, REQUEST, 0, 1),  # over the limit, and no id to fail it with
        HEADER.pack(13, REQUEST, 0xFFFFFFFF, 1),  # 17 bytes asking for 4 billion (error) replies
        HEADER.pack(13 + 8, REQUEST, 2, 2**64 - 1) + struct.pack("<2i", 1, 2),
        HEADER.pack(13 + 4, REQUEST, 0, 1) + struct.pack("<i", 1),  # bytes no id could answer
        HEADER.pack(13 + 4, HELLO, 0, 0) + b"hi!!",  # a client's HELLO carries nothing
        HEADER.pack(13, HELLO, 1, 0),
    ],
    ids=[
        "noise",
        "unknown-kind",
        "oversized-reply",
        "oversized-count-over-bytes",
        "oversized-zero-count",
        "count-over-bytes",
        "ids-past-2**64",
        "zero-count-bytes",
        "hello-with-payload",
        "hello-with-count",
    ],
)
def test_protocol_violation_gets_conn_error_and_close(
    serve_reqrep: Serve, garbage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    port = serve_reqrep(increment_service("int32", "item"), max_frame=4096)
    with connect(port) as bystander, connect(port) as sock:
        sock.sendall(garbage)
        frames = read_frames(sock, 1)
        assert [f.kind for f in frames] == [CONN_ERROR]
        assert b"protocol error" in frames[0].payload
        assert len(frames[0].payload) < 200
        assert sock.recv(10) == b""
        assert any(r.getMessage().startswith("protocol error from") for r in caplog.records)
        raw_request(bystander, struct.pack("<i", 1), count=1)
        assert read_frames(bystander, 1)[0].payload == struct.pack("<i", 2)


def test_an_async_service_needs_an_engine_with_an_event_loop(engine: str) -> None:
    if engine in ("asyncio", "uvloop"):
        create_reqrep_server(echo_later, "jsonl", engine=engine)  # made, not started: nothing to stop
        return
    with pytest.raises(
        ValueError, match=f"an async service needs an engine with an event loop, not '{engine}'"
    ):
        create_reqrep_server(echo_later, "jsonl", engine=engine)


def test_item_service_runs_once_per_request_when_one_of_them_raises(serve_reqrep: Serve) -> None:
    calls: list[int] = []

    def fussy(number: int) -> int:
        calls.append(number)
        if number in (3, 5):
            raise ValueError(f"no {number}")
        return number * 10

    port = serve_reqrep(fussy)
    with connect(port) as sock:
        raw_request(sock, struct.pack("<6i", 1, 2, 3, 4, 5, 6), count=6, first_id=1)
        frames = read_frames(sock, 2)
    assert sorted(calls) == [1, 2, 3, 4, 5, 6]
    (errors,) = [f for f in frames if f.kind == ERROR]
    assert decode_errors(errors) == [(3, 1, "ValueError: no 3"), (5, 1, "ValueError: no 5")]
    (replies,) = [f for f in frames if f.kind == REPLY_IDS]
    ids, values = decode_replies(replies, codec_factory("int32")().decode_batch)
    assert (list(ids), values) == ([1, 2, 4, 6], [10, 20, 40, 60])


def test_a_failed_frame_is_one_error_entry_and_fails_its_calls(serve_reqrep: Serve) -> None:
    def no_thirteen(numbers: list[int]) -> list[int]:
        if 13 in numbers:
            raise ValueError("13 in this batch")
        return [n + 1 for n in numbers]

    port = serve_reqrep(no_thirteen, mode="batch")
    with connect(port) as sock:
        raw_request(sock, struct.pack("<1000i", *range(1000)), count=1000, first_id=1)
        (error,) = read_frames(sock, 1)
        assert decode_errors(error) == [(1, 1000, "ValueError: 13 in this batch")]

    async def main() -> None:
        async with await Client.connect(port=port, batch_size=10) as client:
            with pytest.raises(RemoteError, match="13 in this batch"):
                await client.call_many(list(range(30)))
            assert await client.call_many(list(range(20, 30))) == list(range(21, 31))
            assert client.in_flight == 0
            assert client.late_replies == 10  # the frame answered after the failure, not the failed ids

    run(main())
    with SyncClient(port=port, batch_size=10) as client:
        with pytest.raises(RemoteError, match="13 in this batch"):
            client.call_many(list(range(30)))
        assert client.call_many(list(range(20, 30))) == list(range(21, 31))


def test_an_error_entry_wider_than_any_frame_sent_is_a_protocol_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def answer_with_a_huge_error() -> None:
            conn, _ = listener.accept()
            with conn:
                request = FrameReader().feed(conn.recv(1 << 16))[0]
                out = bytearray()
                encode_run_errors(out, [(request.first_id, 2**32 - 1, "everything failed")])
                conn.sendall(out)
                conn.recv(1)  # until the client closes

        server = threading.Thread(target=answer_with_a_huge_error)
        server.start()

        async def main() -> None:
            async with await Client.connect(port=listener.getsockname()[1]) as client:
                with pytest.raises(ProtocolError, match="fails 4294967295 requests"):
                    await client.call(1)

        run(main())
        server.join(5)


async def plus_one_later(number: int) -> int:
    await asyncio.sleep(0)
    return number + 1


@pytest.mark.parametrize("mode", ["item", "array", "async"])
def test_oversized_request_fails_alone_and_the_connection_goes_on(
    serve_reqrep: Serve, engine: str, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    if mode == "async":
        if engine not in ("asyncio", "uvloop"):
            pytest.skip("async services run on the asyncio engines")
        port = serve_reqrep(plus_one_later, max_frame=4096)
    else:
        port = serve_reqrep(increment_service("int32", mode), mode=mode, max_frame=4096)  # type: ignore[arg-type]
    stream = bytearray()
    append_frame(stream, REQUEST, 1, 1, struct.pack("<i", 10))
    append_frame(stream, REQUEST, 25_000, 2, struct.pack("<25000i", *range(25_000)))  # 100 kB
    append_frame(stream, REQUEST, 2, 25_002, struct.pack("<2i", 20, 30))
    with connect(port) as sock:
        for whole_or_trickled in (bytes(stream), *(stream[i : i + 997] for i in range(0, len(stream), 997))):
            sock.sendall(whole_or_trickled)  # first all at once, then in small writes: the same answers
        frames = read_frames(sock, 6)
        raw_request(sock, struct.pack("<i", 40), count=1, first_id=30_000)
        (last,) = read_frames(sock, 1)
    errors = [run for f in frames if f.kind == ERROR for run in decode_errors(f)]
    message = "request frame of 100013 bytes is over the server's limit of 4096 bytes"
    assert errors == [(2, 25_000, message)] * 2
    replies = sorted((f.first_id, f.payload) for f in frames if f.kind == REPLY)  # async: out of order
    assert replies == sorted([(1, struct.pack("<i", 11)), (25_002, struct.pack("<2i", 21, 31))] * 2)
    assert (last.kind, last.payload) == (REPLY, struct.pack("<i", 41))
    lines = [r.getMessage() for r in caplog.records if r.name == "railcar.reqrep"]
    assert len(lines) == 2  # one per 100 kB frame, however many reads it took
    assert all(line.endswith(f"failed: 25000; the first: {message}") for line in lines)


def test_hello_first_learns_the_servers_limit(serve_reqrep: Serve) -> None:
    port = serve_reqrep(increment_service("int32", "item"), max_frame=4096)
    hello = bytearray()
    encode_hello(hello)
    with connect(port) as sock:
        sock.sendall(hello[:5])  # a HELLO cut across reads is still the first frame
        sock.sendall(hello[5:] + HEADER.pack(13 + 4, REQUEST, 1, 1) + struct.pack("<i", 1))
        answer, reply = read_frames(sock, 2)
        assert decode_hello(answer) == 4096
        assert (reply.kind, reply.payload) == (REPLY, struct.pack("<i", 2))
        sock.sendall(hello)  # a HELLO after the first frame breaks the protocol
        (frame,) = read_frames(sock, 1)
        assert frame.kind == CONN_ERROR
        assert b"HELLO after the first frame" in frame.payload
        assert sock.recv(10) == b""


def test_connection_ending_inside_a_skipped_frame_says_how_much_came(serve_reqrep: Serve) -> None:
    port = serve_reqrep(increment_service("int32", "item"), max_frame=4096)
    with connect(port) as sock:
        sock.sendall(HEADER.pack(13 + 10_000, REQUEST, 1, 1) + bytes(6_000))
        (error,) = read_frames(sock, 1)
        assert error.kind == ERROR
        sock.shutdown(socket.SHUT_WR)
        (frame,) = read_frames(sock, 1)
        assert frame.kind == CONN_ERROR
        assert b"ended inside a frame (6017 bytes of it received)" in frame.payload


def test_frame_cut_short_by_the_peer_gets_conn_error(serve_reqrep: Serve) -> None:
    port = serve_reqrep(increment_service("int32", "item"))
    with connect(port) as bystander, connect(port) as sock:
        sock.sendall(HEADER.pack(13 + 8, REQUEST, 2, 1) + struct.pack("<i", 1))  # 4 of 8 payload bytes
        sock.shutdown(socket.SHUT_WR)
        (frame,) = read_frames(sock, 1)
        assert frame.kind == CONN_ERROR
        assert b"ended inside a frame (21 bytes of it received)" in frame.payload
        assert sock.recv(10) == b""
        raw_request(bystander, struct.pack("<i", 1), count=1)
        assert read_frames(bystander, 1)[0].payload == struct.pack("<i", 2)


def test_a_frame_stalled_past_the_frame_timeout_gets_conn_error_and_close(serve_reqrep: Serve) -> None:
    port = serve_reqrep(increment_service("int32", "item"), frame_timeout=0.3)
    with connect(port) as bystander, connect(port) as sock:
        started = time.monotonic()
        sock.sendall(HEADER.pack(13 + 8, REQUEST, 2, 1) + struct.pack("<i", 1))  # 4 of 8 payload bytes
        time.sleep(0.15)
        raw_request(bystander, struct.pack("<i", 1), count=1)  # a working neighbour keeps working
        assert read_frames(bystander, 1)[0].payload == struct.pack("<i", 2)
        (frame,) = read_frames(sock, 1)
        waited = time.monotonic() - started
        assert frame.kind == CONN_ERROR
        assert b"frame not received whole within 0.3 s" in frame.payload
        assert sock.recv(10) == b""
        assert 0.3 <= waited < 3.0
        raw_request(bystander, struct.pack("<i", 5), count=1)  # idle, not inside a frame: left open
        assert read_frames(bystander, 1)[0].payload == struct.pack("<i", 6)


def test_a_frame_that_keeps_arriving_is_still_bounded_by_the_frame_timeout(serve_reqrep: Serve) -> None:
    port = serve_reqrep(increment_service("int32", "item"), frame_timeout=0.4)
    with connect(port) as sock:
        started = time.monotonic()
        sock.sendall(HEADER.pack(13 + 4000, REQUEST, 1000, 1))
        closed_after = None
        for _ in range(200):  # one byte every 20 ms: slowloris, never a whole frame
            try:
                sock.sendall(b"\0")
            except OSError:  # reset: the server closed it
                closed_after = time.monotonic() - started
                break
            time.sleep(0.02)
        assert closed_after is not None
        assert 0.4 <= closed_after < 3.0
        sock.settimeout(5)
        with contextlib.suppress(OSError):  # the error frame, if the reset left it readable
            frames = read_frames(sock, 1)
            assert frames[0].kind == CONN_ERROR


def test_idle_timeout_closes_silent_connections_only(serve_reqrep: Serve) -> None:
    port = serve_reqrep(increment_service("int32", "item"), idle_timeout=0.3)
    with connect(port) as idle, connect(port) as busy:
        started = time.monotonic()
        for value in range(8):  # a request every 0.1 s keeps this one open
            raw_request(busy, struct.pack("<i", value), count=1)
            assert read_frames(busy, 1)[0].payload == struct.pack("<i", value + 1)
            time.sleep(0.1)
        idle.settimeout(5)
        assert idle.recv(10) == b""  # closed silently, without an error frame
        assert time.monotonic() - started >= 0.3


def test_timeouts_must_be_positive_or_none() -> None:
    for bad in (0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="timeout must be a positive number"):
            create_reqrep_server(increment_service("int32", "item"), frame_timeout=bad)
        with pytest.raises(ValueError, match="timeout must be a positive number"):
            create_reqrep_server(increment_service("int32", "item"), idle_timeout=bad)


def test_timeouts_and_the_in_flight_window(silent: SilentServer) -> None:

    async def main() -> None:
        async with await Client.connect(port=silent.port, max_in_flight=100) as client:
            with pytest.raises(RequestTimeout):
                await client.call(1, timeout=0.1)
            with pytest.raises(RequestTimeout):
                await client.call_many([1, 2, 3], timeout=0.1)
            assert client.in_flight == 0
            replies: list[Any] = []
            for i in range(100):
                client.send(i, replies.append)
            assert client.in_flight == 100
            with pytest.raises(InFlightLimit):
                client.send(100, replies.append)
            waiting = asyncio.ensure_future(client.call(101))
            await asyncio.sleep(0.1)
            assert not waiting.done()
            assert client.in_flight == 100
        assert isinstance(await asyncio.gather(waiting, return_exceptions=True), list)
        assert all(isinstance(r, ConnectionLost) for r in replies)

    run(main())


def test_a_failed_batch_of_several_frames_leaves_nothing_in_flight(serve_reqrep: Serve) -> None:
    port = serve_reqrep(increment_service("int32", "item"))
    numbers = list(range(30))
    numbers[5] = 2**31 - 1  # its reply overflows int32: that one request fails

    async def main() -> None:
        async with await Client.connect(port=port, batch_size=10, max_in_flight=50) as client:
            with pytest.raises(RemoteError, match="cannot encode reply"):
                await client.call_many(numbers)
            with pytest.raises(RemoteError):
                await client.call_array(np.array(numbers, dtype="<i4"))
            # Replies to the batches' other frames arrive before this one's: they are counted late.
            assert await client.call_many(list(range(10))) == list(range(1, 11))
            assert client.in_flight == 0

    run(main())


ASYNC_ONLY = {"window", "write_buffer"}  # options SyncClient does not have
SYNC_ONLY = {"connect_timeout"}


@pytest.mark.parametrize(
    "options",
    [
        {"max_in_flight": 0},
        {"batch_size": 0},
        {"window": -1.0},
        {"window": float("nan")},
        {"max_frame": 0},
        {"write_buffer": -1},
        {"connect_timeout": -1.0},
    ],
    ids=["in-flight", "batch-size", "window", "nan-window", "max-frame", "write-buffer", "connect-timeout"],
)
def test_bad_client_options_raise_value_error_before_connecting(options: dict[str, Any]) -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="need"):
            await Client.connect(port=1, **options)  # nothing listens on port 1: checked first

    if not SYNC_ONLY & options.keys():
        run(main())
    if not ASYNC_ONLY & options.keys():
        with pytest.raises(ValueError, match="need"):
            SyncClient(port=1, **options)


def test_pool_closes_the_connections_it_made_when_one_fails() -> None:
    made = 0

    def second_fails() -> Any:
        nonlocal made
        made += 1
        if made == 2:
            raise ValueError("no second codec")
        return codec_factory("int32")()

    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(5)
        with pytest.raises(ValueError, match="no second codec"):
            run(ClientPool.connect(port=listener.getsockname()[1], size=3, codec=second_fails))
        for _ in range(2):
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(5)
                hello = bytearray()
                encode_hello(hello)
                assert recv_until_eof(conn) == hello  # the client's first frame, then closed by the pool


def test_server_closing_the_connection_fails_calls_with_connection_lost() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)

        def refuse_twice() -> None:
            for _ in range(2):  # the async client, then the sync one
                conn, _ = listener.accept()
                with conn:
                    conn.recv(1 << 16)
                    out = bytearray()
                    encode_conn_error(out, "protocol error: no thanks")
                    conn.sendall(out)

        server = threading.Thread(target=refuse_twice)
        server.start()
        port = listener.getsockname()[1]

        async def main() -> None:
            # Without reconnecting: a call made after the CONN_ERROR gets it too, not the next connection.
            async with await Client.connect(port=port, reconnect=False) as client:
                with pytest.raises(
                    ConnectionLost, match="server closed the connection: protocol error: no thanks"
                ):
                    await client.call_many(list(range(20)))

        run(main())
        with (
            SyncClient(port=port, reconnect=False) as client,
            pytest.raises(ConnectionLost, match="server closed the connection"),
        ):
            client.call_many(list(range(20)))
        server.join(5)


def test_pool_spreads_calls(serve_reqrep: Serve, engine: str) -> None:
    port = serve_reqrep(increment_service("int32", "item"))

    async def main() -> list[int]:
        pool = await ClientPool.connect(port=port, size=3)
        try:
            return list(await asyncio.gather(*(pool.call(i) for i in range(300))))
        finally:
            await pool.close()

    assert run(main()) == [i + 1 for i in range(300)]


@pytest.mark.parametrize("portable", [False, True], ids=["linux", "portable"])
def test_sync_client_from_many_threads(
    serve_reqrep: Serve, portable: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if portable:  # what systems without eventfd or non-blocking reads get: lock wake-ups, callers write
        monkeypatch.setattr(sync, "_Wakeup", sync._LockWakeup)
        monkeypatch.setattr(sync, "_POLL_SECONDS", 0.0)
    port = serve_reqrep(failing_on_13)
    errors: list[BaseException] = []
    results: dict[int, list[int]] = {}

    with SyncClient(port=port) as client:

        def worker(index: int) -> None:
            try:
                results[index] = [client.call(index * 1000 + i) for i in range(200) if i != 13]
                assert client.call_many(list(range(2000, 4500))) == [2 * i for i in range(2000, 4500)]
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        with pytest.raises(RemoteError, match="unlucky"):
            client.call(13)
        assert client.call(4) == 8
    assert errors == []
    assert results == {t: [2 * (t * 1000 + i) for i in range(200) if i != 13] for t in range(8)}


def _raises(fn: Callable[[], Any]) -> BaseException:
    try:
        fn()
    except BaseException as exc:
        return exc
    raise AssertionError("did not raise")


def test_invalid_reply_closes_the_client(engine: str, serve: ServerFactory) -> None:
    echo = serve(EchoHandler())  # echoes REQUEST frames back: not valid replies

    async def main() -> None:
        async with await Client.connect(port=echo.port) as client:
            with pytest.raises(ProtocolError, match="invalid reply from server: bad HELLO answer"):
                await client.call(1)

    run(main())


def test_call_array_round_trips_numpy_records(serve_reqrep: Serve) -> None:
    int_port = serve_reqrep(increment_service("int32", "array"), mode="array")
    record_port = serve_reqrep(increment_service("struct276", "array"), "struct276", mode="array")
    numbers = np.arange(-3000, 3000, dtype="<i4")
    records = np.zeros(2500, dtype=RECORD_276)
    records["id"] = np.arange(2500)

    async def main() -> tuple[Any, Any, Any]:
        async with (
            await Client.connect(port=int_port) as ints,
            await Client.connect(port=record_port, codec="struct276") as structs,
        ):
            one_frame = await ints.call_array(numbers[:10])  # fewer than batch_size: a single frame
            return one_frame, await ints.call_array(numbers), await structs.call_array(records)

    one_frame, replies, bumped = run(main())
    assert np.array_equal(one_frame, numbers[:10] + 1)
    assert np.array_equal(replies, numbers + 1)
    assert np.array_equal(bumped["id"], records["id"])
    assert set(bumped["flags"].tolist()) == {1}


def test_call_array_needs_a_fixed_size_codec(serve_reqrep: Serve) -> None:
    port = serve_reqrep(increment_service("jsonl", "item"), "jsonl")

    async def main() -> None:
        async with await Client.connect(port=port, codec="jsonl") as client:
            with pytest.raises(CodecError, match="fixed-size codec"):
                await client.call_array(np.zeros(3))

    run(main())


@pytest.mark.parametrize("mode", ["item", "array"])
def test_demo_increment_fails_on_overflow_in_every_mode(serve_reqrep: Serve, mode: str) -> None:
    port = serve_reqrep(increment_service("int32", mode), mode=mode)  # type: ignore[arg-type]
    with connect(port) as sock:
        raw_request(sock, struct.pack("<2i", 1, 2**31 - 1), count=2, first_id=1)
        frames = read_frames(sock, 2 if mode == "item" else 1)
    errors = {
        request_id: message
        for frame in frames
        if frame.kind == ERROR
        for first_id, count, message in decode_errors(frame)
        for request_id in range(first_id, first_id + count)
    }
    assert 2 in errors  # not answered with -2**31
    assert "overflow" in errors[2] or "cannot encode reply" in errors[2]
    if mode == "array":  # one service call for the frame: the whole frame fails, saying why
        assert errors == {1: errors[2], 2: errors[2]}
        assert "overflow int32" in errors[2]


def test_trailing_bytes_after_the_last_request_are_named(serve_reqrep: Serve) -> None:
    port = serve_reqrep(increment_service("msgpack", "item"), "msgpack")
    items = bytearray()
    codec_factory("msgpack")().encode_batch([1, 2], items)
    with connect(port) as sock:
        raw_request(sock, bytes(items) + b"\x01\x02", count=2, first_id=1)
        (error,) = read_frames(sock, 1)
    assert error.kind == ERROR
    assert decode_errors(error) == [(1, 2, "bad request: frame has 2 unused bytes after its 2 requests")]


def bad_middle_request(codec: str) -> bytes:
    """Three requests whose middle one cannot be decoded, their framing intact."""
    first, last = bytearray(), bytearray()
    codec_factory(codec)().encode_batch([{"a": 1}], first)
    codec_factory(codec)().encode_batch(["x"], last)
    bad = b"{bad json\n" if codec == "jsonl" else b"\x01\x00\x00\x00\xc1"  # 0xc1 is never valid msgpack
    return bytes(first) + bad + bytes(last)


async def echo_later(request: Any) -> Any:
    await asyncio.sleep(0)
    return request


@pytest.mark.parametrize("mode", ["item", "batch", "async"])
@pytest.mark.parametrize("codec", ["jsonl", "msgpack"])
def test_an_undecodable_request_fails_alone(
    serve_reqrep: Serve, engine: str, codec: str, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    if mode == "async":
        if engine not in ("asyncio", "uvloop"):
            pytest.skip("async services run on the asyncio engines")
        port = serve_reqrep(echo_later, codec)
    else:
        port = serve_reqrep(increment_service(codec, mode), codec, mode=mode)  # type: ignore[arg-type]
    with connect(port) as sock:
        raw_request(sock, bad_middle_request(codec), count=3, first_id=1)
        frames = read_frames(sock, 2)
        raw_request(sock, bad_middle_request(codec), count=4, first_id=4)  # framing broken: all fail
        (broken,) = read_frames(sock, 1)
    (errors,) = [f for f in frames if f.kind == ERROR]
    [(request_id, count, message)] = decode_errors(errors)
    assert (request_id, count) == (2, 1)
    assert message.startswith(f"bad request: invalid {'JSON line' if codec == 'jsonl' else 'msgpack item'}")
    (replies,) = [f for f in frames if f.kind == REPLY_IDS]
    ids, values = decode_replies(replies, codec_factory(codec)().decode_batch)
    assert (list(ids), values) == ([1, 3], [{"a": 1}, "x"])
    assert broken.kind == ERROR
    assert decode_errors(broken) == [(4, 4, "bad request: frame holds 3 whole requests, its header says 4")]
    lines = [r.getMessage() for r in caplog.records if r.name == "railcar.reqrep"]
    assert [line.split("; the first: ")[0].split(" failed: ")[1] for line in lines] == ["1", "4"]


def test_failed_requests_are_logged_once_per_frame_not_per_request(
    serve_reqrep: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    port = serve_reqrep(failing_on_13)
    with connect(port) as sock:
        raw_request(sock, struct.pack("<5i", 13, 1, 13, 2, 13), count=5, first_id=1)
        frames = read_frames(sock, 2)
    assert sorted(f.kind for f in frames) == sorted([REPLY_IDS, ERROR])
    lines = [r.getMessage() for r in caplog.records if r.name == "railcar.reqrep"]
    assert len(lines) == 1
    assert lines[0].endswith("failed: 3; the first: ValueError: unlucky number")


def wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    give_up = time.monotonic() + seconds
    while not condition() and time.monotonic() < give_up:
        time.sleep(0.01)


def one_request_frames(numbers: range) -> bytes:
    return b"".join(HEADER.pack(13 + 4, REQUEST, 1, n) + struct.pack("<i", n) for n in numbers)


def test_async_service_stops_reading_at_the_limit_of_requests_in_progress(
    engine: str, serve_reqrep: Serve
) -> None:
    if engine not in ("asyncio", "uvloop"):
        pytest.skip("async services run on the asyncio engines")
    released = threading.Event()
    running, most = 0, 0  # changed on the server's loop thread only

    async def held(number: int) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        while not released.is_set():
            await asyncio.sleep(0.005)
        running -= 1
        return number + 1

    with pytest.raises(ValueError, match="max_in_progress must be at least 1"):
        serve_reqrep(held, max_in_progress=0)
    port = serve_reqrep(held, max_in_progress=8)
    with connect(port) as sock:
        sock.sendall(one_request_frames(range(1, 201)))  # 200 requests at once, none answered yet
        wait_until(lambda: running == 8)
        time.sleep(0.2)  # room to start more, were the limit not kept
        assert (running, most) == (8, 8)
        released.set()
        frames = read_frames(sock, 200)
    assert sorted((f.kind, f.first_id, f.payload) for f in frames) == [
        (REPLY, n, struct.pack("<i", n + 1)) for n in range(1, 201)
    ]
    assert most == 8


def test_a_disconnect_cancels_the_requests_in_progress(engine: str, serve_reqrep: Serve) -> None:
    if engine not in ("asyncio", "uvloop"):
        pytest.skip("async services run on the asyncio engines")
    started: list[int] = []
    cancelled: list[int] = []

    async def endless(number: int) -> int:
        started.append(number)
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(number)
            raise
        return number

    port = serve_reqrep(endless)
    with connect(port) as sock:
        sock.sendall(one_request_frames(range(1, 4)))
        wait_until(lambda: len(started) == 3)
    wait_until(lambda: len(cancelled) == 3)
    assert sorted(cancelled) == [1, 2, 3]
