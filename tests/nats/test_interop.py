"""railcar and nats-py on one nats-server: messages, headers, requests and replies both ways."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

import railcar.nats as rn
from tests.nats.server import NatsServer
from tests.nats.test_client import run

nats = pytest.importorskip("nats")


async def their_flush(theirs: Any) -> None:
    """Flush nats-py so that what it sent before has reached the server: two flushes, not one.

    nats-py writes a flush's PING at once, ahead of the commands still waiting in its pending
    buffer for its flusher task (``_send_ping`` in nats/aio/client.py), so the PONG of one
    flush does not prove that a SUB or PUB made just before reached the server (this test
    lost both messages about once in a dozen runs that way).  The first flush wakes the
    flusher, which writes the pending commands before the PONG can be read; the second
    flush's PING then leaves after them.
    """
    await theirs.flush()
    await theirs.flush()


def test_railcar_publishes_nats_py_receives(nats_server: NatsServer) -> None:
    async def body() -> None:
        theirs = await nats.connect(nats_server.url)
        ours = await rn.connect(nats_server.url)
        try:
            received: list[Any] = []
            both = asyncio.Event()

            async def collect(msg: Any) -> None:
                received.append(msg)
                if len(received) == 2:
                    both.set()

            await theirs.subscribe("interop.a", cb=collect)
            await their_flush(theirs)  # the SUB is on the server
            await ours.publish("interop.a", b"plain")
            await ours.publish("interop.a", b"with headers", headers={"X-Trace": "7"})
            await ours.flush()  # the server has both, queued to nats-py before our PONG
            await their_flush(theirs)  # nats-py has read both: they came before its PONG
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(both.wait(), 5)  # its callback task ran
            assert [msg.data for msg in received] == [b"plain", b"with headers"]
            assert received[1].headers == {"X-Trace": "7"}
        finally:
            await ours.close()
            await theirs.close()

    run(body())


def test_nats_py_publishes_railcar_receives(nats_server: NatsServer) -> None:
    async def body() -> None:
        theirs = await nats.connect(nats_server.url)
        ours = await rn.connect(nats_server.url)
        try:
            sub = await ours.subscribe("interop.b")
            await ours.flush()
            await theirs.publish("interop.b", b"hello", reply="interop.r", headers={"K": "v"})
            await their_flush(theirs)
            msg = await sub.next_msg(5)
            assert (msg.subject, msg.reply, msg.data) == ("interop.b", "interop.r", b"hello")
            assert msg.headers is not None
            assert msg.headers["K"] == "v"
        finally:
            await ours.close()
            await theirs.close()

    run(body())


def test_requests_both_ways(nats_server: NatsServer) -> None:
    async def body() -> None:
        theirs = await nats.connect(nats_server.url)
        ours = await rn.connect(nats_server.url)
        try:

            async def their_service(msg: Any) -> None:
                await msg.respond(b"theirs:" + msg.data)

            async def our_service(msg: rn.Msg) -> None:
                await ours.publish(msg.reply, b"ours:" + msg.data)

            await theirs.subscribe("svc.theirs", cb=their_service)
            await ours.subscribe("svc.ours", cb=our_service)
            await their_flush(theirs)  # else a request may find no responders
            await ours.flush()
            replies = await asyncio.gather(*(ours.request("svc.theirs", b"%d" % i, 5) for i in range(50)))
            assert [r.data for r in replies] == [b"theirs:%d" % i for i in range(50)]
            reply = await theirs.request("svc.ours", b"q", timeout=5)
            assert reply.data == b"ours:q"
            with pytest.raises(rn.NoResponders):
                await ours.request("svc.none", b"", 5)
        finally:
            await ours.close()
            await theirs.close()

    run(body())
