"""Bad input from the user and from the server: precise exceptions carrying the server's words, no hangs.

Real nats-server configurations (users, permissions, max_payload) where the server can be
made to say it; a fake server (a tiny asyncio listener in the test) for what a real one
does not do on demand: -ERR messages before it closes, garbage, a message cut off.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import railcar.nats as rn
from railcar.errors import ProtocolError
from tests.nats.conftest import StartNats
from tests.nats.test_client import fake_server, run, stop_fake

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[Any]]


async def handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, info: bytes = b"{}") -> None:
    """What a server says to a new client: INFO, then PONG to the PING after CONNECT."""
    writer.write(b"INFO " + info + b"\r\n")
    assert (await reader.readline()).startswith(b"CONNECT ")
    assert await reader.readline() == b"PING\r\n"
    writer.write(b"PONG\r\n")


async def with_fake(script: Script, test: Callable[[str], Awaitable[None]]) -> None:
    """Run ``test(url)`` against a fake server running ``script`` per connection."""
    listener, done = await fake_server(script)
    try:
        await test(f"nats://127.0.0.1:{listener.sockets[0].getsockname()[1]}")
    finally:
        await stop_fake(listener, done)


class Within:
    """Asserts that its block took less than ``limit`` seconds: no hang past the timeouts."""

    def __init__(self, limit: float) -> None:
        self.limit = limit

    def __enter__(self) -> None:
        self.started = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        assert time.monotonic() - self.started < self.limit


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:4222", "scheme must be nats:// or tls://"),
        ("nats://127.0.0.1:port", "the port is not a number"),
        ("nats://127.0.0.1:70000", "the port is not a number"),
        ("nats://:4222", "no host"),
    ],
)
def test_bad_urls_are_refused_before_dialling(url: str, says: str) -> None:
    async def body() -> None:
        with pytest.raises(ValueError, match=f"bad NATS URL .*{says}"):
            await rn.connect(url)
        with pytest.raises(ValueError, match="need at least one server URL"):
            await rn.connect([])

    run(body())


def test_auth_failures_carry_the_servers_words_at_once(start_nats: StartNats) -> None:
    users = start_nats('authorization { users = [ {user: "app", password: "secret"} ] }\n')
    token = start_nats("authorization { token: s3cret }\n")

    async def body() -> None:
        for url, options in [
            (users.url, {"user": "app", "password": "wrong"}),
            (users.url, {}),
            (f"nats://app:wrong@127.0.0.1:{users.port}", {}),
            (token.url, {"token": "nope"}),
        ]:
            with Within(3), pytest.raises(rn.AuthorizationError, match="Authorization Violation"):
                await rn.connect(url, connect_timeout=2, **options)  # reconnection on: still fails now

    run(body())


def test_permission_violations_are_reported_and_the_connection_stays(start_nats: StartNats) -> None:
    server = start_nats(
        """
authorization {
  users = [
    {user: "app", password: "pw", permissions: {
      publish: {allow: ["ok.>", "_INBOX.>"]}, subscribe: {allow: ["ok.>", "_INBOX.>"]}
    }}
  ]
}
"""
    )

    async def body() -> None:
        errors: list[BaseException] = []
        async with await rn.connect(server.url, user="app", password="pw", error_cb=errors.append) as nc:
            await nc.publish("secret.pub", b"no")
            await nc.subscribe("secret.sub")
            await nc.flush(5)  # the server's -ERRs come before its PONG; error_cb is called as they are read
            assert all(isinstance(e, rn.ServerError) for e in errors)
            texts = sorted(str(e) for e in errors)
            assert texts == [
                'Permissions Violation for Publish to "secret.pub"',
                'Permissions Violation for Subscription to "secret.sub"',
            ]
            assert nc.connected  # the server keeps the connection after these
            sub = await nc.subscribe("ok.x")
            await nc.publish("ok.x", b"yes")
            assert (await sub.next_msg(5)).data == b"yes"

    run(body())


def test_max_payload_is_refused_before_sending_and_the_servers_error_is_kept(start_nats: StartNats) -> None:
    server = start_nats("max_payload: 512\n")

    async def too_small(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await handshake(reader, writer, b'{"max_payload":1048576}')
        await reader.readline()  # a PUB it will not take
        writer.write(b"-ERR 'Maximum Payload Violation'\r\n")
        writer.close()

    async def against_fake(url: str) -> None:
        errors: list[BaseException] = []
        nc = await rn.connect(url, reconnect=False, error_cb=errors.append)
        await nc.publish("big", b"x" * 100_000)  # the server says its limit is smaller than INFO's
        with Within(3), pytest.raises(rn.ConnectionLost, match="Maximum Payload Violation"):
            await nc.flush(2)
        assert nc.closed
        assert any("Maximum Payload Violation" in str(e) for e in errors)

    async def body() -> None:
        async with await rn.connect(server.url) as nc:
            with pytest.raises(
                rn.MaxPayloadExceeded, match="513 bytes is over the server's max_payload of 512"
            ):
                await nc.publish("big", b"x" * 513)
            with pytest.raises(rn.MaxPayloadExceeded):
                await nc.request("big", b"x" * 513, timeout=1)
            assert nc.pending_bytes == 0  # nothing was queued
            await nc.flush(5)
            assert nc.connected
        await with_fake(too_small, against_fake)

    run(body())


def test_invalid_subjects_are_refused_here_and_the_servers_complaint_reported() -> None:
    async def complains(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await handshake(reader, writer)
        await reader.readline()  # SUB
        writer.write(b"-ERR 'Invalid Subject'\r\n")
        assert await reader.readline() == b"PING\r\n"
        writer.write(b"PONG\r\n")

    async def against_fake(url: str) -> None:
        errors: list[BaseException] = []
        async with await rn.connect(url, reconnect=False, error_cb=errors.append) as nc:
            for bad in ["", "a b", "a..b", "a.", "tab\there"]:
                with pytest.raises(rn.InvalidSubject):
                    await nc.publish(bad)
                with pytest.raises(rn.InvalidSubject):
                    await nc.subscribe(bad)
                with pytest.raises(rn.InvalidSubject):
                    await nc.request(bad, timeout=1)
            with pytest.raises(rn.InvalidSubject, match="reply subject"):
                await nc.publish("ok", reply="bad reply")
            with pytest.raises(rn.InvalidHeader):
                await nc.publish("ok", headers={"Bad Name": "v"})
            with pytest.raises(rn.InvalidHeader):
                await nc.publish("ok", headers={"K": "line\r\nbreak"})
            await nc.subscribe("looks.fine.to.us")  # the fake server disagrees
            await nc.flush(2)
            assert [str(e) for e in errors] == ["Invalid Subject"]
            assert isinstance(errors[0], rn.ServerError)
            assert nc.connected  # not a fatal error: the connection stays

    run(with_fake(complains, against_fake))


def test_stale_connection_from_the_server_fails_what_waits_with_its_words() -> None:
    async def stale(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await handshake(reader, writer)
        await reader.readline()  # the SUB of the request inbox
        await reader.readline()  # the request
        writer.write(b"-ERR 'Stale Connection'\r\n")
        writer.close()

    async def against_fake(url: str) -> None:
        nc = await rn.connect(url, reconnect=False)
        with (
            Within(3),
            pytest.raises(rn.ConnectionLost, match="server closed the connection: Stale Connection"),
        ):
            await nc.request("svc", b"?", timeout=10)
        assert nc.closed

    run(with_fake(stale, against_fake))


def test_garbage_from_the_server_is_a_protocol_error_saying_what_came() -> None:
    async def garbage_in_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"INFO {}\r\n")
        await reader.readline()
        writer.write(b"HELLO THERE\r\n")

    async def bad_msg_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await handshake(reader, writer)
        await reader.readline()  # SUB
        writer.write(b"MSG x one two\r\n")

    async def refused(url: str) -> None:
        with Within(3), pytest.raises(ProtocolError, match="unknown operation b'HELLO THERE'"):
            await rn.connect(url, connect_timeout=2)

    async def dropped(url: str) -> None:
        errors: list[BaseException] = []
        nc = await rn.connect(url, reconnect=False, error_cb=errors.append)
        sub = await nc.subscribe("x")
        with Within(3), pytest.raises(ProtocolError, match="malformed MSG line b'MSG x one two'"):
            await nc.flush(2)  # the flush waiting when the bad line came
        assert [m async for m in sub] == []  # the subscription ends with the client
        assert any(isinstance(e, ProtocolError) for e in errors)

    async def body() -> None:
        await with_fake(garbage_in_handshake, refused)
        await with_fake(bad_msg_line, dropped)

    run(body())


def test_a_server_that_stops_mid_message_cannot_hang_anything() -> None:
    cut: list[asyncio.StreamWriter] = []

    async def half_info(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b'INFO {"max_payload":')  # and nothing more

    async def half_msg(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await handshake(reader, writer)
        await reader.readline()  # SUB
        writer.write(b"MSG x 1 100\r\n" + b"y" * 40)  # 60 bytes short, then silence
        cut.append(writer)

    async def silent_handshake(url: str) -> None:
        with Within(2), pytest.raises(TimeoutError, match=r"no NATS handshake .* within 0\.5 s"):
            await rn.connect(url, connect_timeout=0.5)

    async def silent_message(url: str) -> None:
        nc = await rn.connect(url, reconnect=False)
        sub = await nc.subscribe("x")
        with Within(2), pytest.raises(TimeoutError):
            await sub.next_msg(0.3)
        with Within(2), pytest.raises(rn.RequestTimeout, match="no PONG"):
            await nc.flush(0.3)
        with Within(2), pytest.raises(rn.RequestTimeout, match="no reply"):
            await nc.request("svc", b"?", timeout=0.3)
        cut[0].close()  # the server goes away with the message unfinished
        with Within(3), pytest.raises(rn.ConnectionLost):
            await nc.flush(2)
        assert nc.closed

    async def body() -> None:
        await with_fake(half_info, silent_handshake)
        await with_fake(half_msg, silent_message)

    run(body())
