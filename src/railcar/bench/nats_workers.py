"""The load processes of ``railcar nats bench``: one scenario with one client library, on uvloop.

``python -m railcar.bench.nats_workers CLIENT SCENARIO --url URL --msgs K ...`` (CLIENT is
``railcar`` or ``nats-py``) primes the server (one connection that publishes, flushes and
closes), opens its connections, runs the scenario once unmeasured (the warm-up), prints
``start``, runs it measured and prints one JSON object: messages counted, messages lost,
seconds.  Each library is used as its documentation shows, on uvloop (nats-py's fastest
setting; railcar's default).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvloop

SUBJECT = "railcar.bench"
#: The subject the ``railcar nats serve`` processes of the service scenario answer on.
SERVICE_SUBJECT = "railcar.bench.service"
#: Seconds without a new message after which a subscriber's missing messages count as lost.
STALL = 2.0
#: Seconds any single flush or request may take before it counts as failed.
OP_TIMEOUT = 30.0


@dataclass
class Options:
    """What one worker runs."""

    client: str
    scenario: str
    url: str
    msgs: int
    size: int
    pubs: int
    subs: int
    requests: int
    requesters: int
    warmup: float  # share of the measured work run first, unmeasured
    calls: int = 20_000  # service: calls per run
    batch: int = 10  # service: int32 records per call


# -- each library's way of doing the few things the scenarios need -------------------------


async def connect(client: str, url: str) -> Any:
    """A connection of library ``client`` to ``url``."""
    if client == "railcar":
        import railcar.nats  # noqa: PLC0415 - each worker imports only its own library

        return await railcar.nats.connect(url, name="railcar-bench")
    import nats  # noqa: PLC0415

    return await nats.connect(url, name="nats-py-bench")


async def subscribe(client: str, nc: Any, subject: str, on_msg: Callable[[], None]) -> None:
    """Subscribe ``nc`` to ``subject``, calling ``on_msg()`` per message (nats-py takes only coroutines)."""
    if client == "railcar":
        await nc.subscribe(subject, cb=lambda _msg: on_msg())
        return

    async def handler(_msg: Any) -> None:
        on_msg()

    await nc.subscribe(subject, cb=handler)


async def serve_replies(client: str, nc: Any, subject: str, payload: bytes) -> None:
    """Answer every request on ``subject`` with ``payload``, each library's way."""
    if client == "railcar":
        publish = nc.publish

        async def answer(msg: Any) -> None:
            await publish(msg.reply, payload)

        await nc.subscribe(subject, cb=answer)
        return

    async def respond(msg: Any) -> None:
        await msg.respond(payload)

    await nc.subscribe(subject, cb=respond)


async def prime(client: str, url: str) -> None:
    """One connection opened, used and closed before anything is measured."""
    nc = await connect(client, url)
    await nc.publish(SUBJECT + ".prime", b"prime")
    await nc.flush(OP_TIMEOUT)
    await nc.close()


# -- the scenarios: each returns (messages counted, messages lost) -------------------------


async def publish_n(nc: Any, n: int, payload: bytes) -> None:
    """Publish ``n`` messages, then wait for the flush's PONG: only then has the server them all."""
    publish = nc.publish
    for _ in range(n):
        await publish(SUBJECT, payload)
    await nc.flush(OP_TIMEOUT)


class Counter:
    """Messages a subscriber received, and when the last came."""

    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0

    def __call__(self) -> None:
        """Count one message."""
        self.count += 1
        self.last = time.perf_counter()


async def wait_for(counters: list[Counter], expected: int) -> float:
    """Wait until each counter reaches ``expected`` or stalls; return when the last message came."""
    while True:
        if all(c.count >= expected for c in counters):
            break
        newest = max(c.last for c in counters)
        if newest and time.perf_counter() - newest > STALL:
            break
        await asyncio.sleep(0.001)
    return max(c.last for c in counters)


class Scenario:
    """A scenario's connections, set up once and run twice (warm-up, then measured)."""

    def __init__(self, options: Options) -> None:
        self.o = options
        self.payload = b"x" * options.size
        self.pubs: list[Any] = []
        self.subs: list[Counter] = []
        self.conns: list[Any] = []
        self.requester: Any = None

    async def setup(self) -> None:
        """Open the connections (and subscriptions) the scenario uses."""
        o = self.o
        if o.scenario in {"pub", "pubsub"}:
            self.pubs = [await connect(o.client, o.url) for _ in range(o.pubs)]
            self.conns += self.pubs
        if o.scenario == "pubsub":
            for _ in range(o.subs):
                nc = await connect(o.client, o.url)
                counter = Counter()
                await subscribe(o.client, nc, SUBJECT, counter)
                await nc.flush(OP_TIMEOUT)  # subscribed on the server before anything is published
                self.conns.append(nc)
                self.subs.append(counter)
        if o.scenario == "service":
            self.requester = await connect(o.client, o.url)
            self.conns.append(self.requester)
        if o.scenario == "reqrep":
            replier = await connect(o.client, o.url)
            await serve_replies(o.client, replier, SUBJECT, self.payload)
            await replier.flush(OP_TIMEOUT)
            self.requester = await connect(o.client, o.url)
            self.conns += [replier, self.requester]

    async def run(self, share: float) -> tuple[int, int, float]:
        """Run ``share`` of the work; return messages counted, lost, and the seconds it took."""
        o = self.o
        if o.scenario == "reqrep":
            return await self._requests(max(1, int(o.requests * share)))
        if o.scenario == "service":
            return await self._calls(max(1, int(o.calls * share)))
        per = max(1, int(o.msgs * share) // o.pubs)
        for counter in self.subs:
            counter.count, counter.last = 0, 0.0
        start = time.perf_counter()
        await asyncio.gather(*(publish_n(nc, per, self.payload) for nc in self.pubs))
        if o.scenario == "pub":
            return per * o.pubs, 0, time.perf_counter() - start
        expected = per * o.pubs
        last = await wait_for(self.subs, expected)
        received = sum(min(c.count, expected) for c in self.subs)
        return received, expected * o.subs - received, max(last - start, 1e-9)

    async def _requests(self, total: int) -> tuple[int, int, float]:
        claimed = answered = failed = 0
        request = self.requester.request
        payload = self.payload

        async def requester() -> None:
            nonlocal claimed, answered, failed
            while claimed < total:
                claimed += 1
                try:
                    await request(SUBJECT, payload, timeout=OP_TIMEOUT)
                except Exception:  # noqa: BLE001 - counted as lost, the load goes on
                    failed += 1
                else:
                    answered += 1

        start = time.perf_counter()
        await asyncio.gather(*(requester() for _ in range(self.o.requesters)))
        return answered, failed, time.perf_counter() - start

    async def _calls(self, total: int) -> tuple[int, int, float]:
        """``total`` calls of ``batch`` records each to the service processes, ``requesters`` at a time."""
        from railcar.nats.batches import call_batch  # noqa: PLC0415 - railcar only

        claimed = answered = failed = 0
        records = list(range(self.o.batch))
        nc = self.requester

        async def caller() -> None:
            nonlocal claimed, answered, failed
            while claimed < total:
                claimed += 1
                try:
                    await call_batch(nc, SERVICE_SUBJECT, records, "int32", timeout=OP_TIMEOUT)
                except Exception:  # noqa: BLE001 - counted as lost, the load goes on
                    failed += 1
                else:
                    answered += 1

        start = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(self.o.requesters)))
        return answered, failed, time.perf_counter() - start

    async def close(self) -> None:
        """Close every connection."""
        for nc in self.conns:
            await nc.close()


async def main(o: Options) -> dict[str, Any]:
    """Prime, set up, warm up, print ``start``, measure; the result as a JSON-able dict."""
    await prime(o.client, o.url)
    scenario = Scenario(o)
    await scenario.setup()
    if o.warmup > 0:
        await scenario.run(o.warmup)
    print("start", flush=True)
    msgs, lost, elapsed = await scenario.run(1.0)
    await scenario.close()
    return {"msgs": msgs, "lost": lost, "elapsed": elapsed}


def parse(argv: list[str] | None = None) -> Options:
    """The worker's command line."""
    parser = argparse.ArgumentParser(prog="railcar.bench.nats_workers")
    parser.add_argument("client", choices=["railcar", "nats-py"])
    parser.add_argument("scenario", choices=["pub", "pubsub", "reqrep", "service"])
    parser.add_argument("--url", required=True)
    for name, default in (("msgs", 1_000_000), ("size", 16), ("pubs", 1), ("subs", 1)):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--requesters", type=int, default=100)
    parser.add_argument("--warmup", type=float, default=0.1)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=10)
    return Options(**vars(parser.parse_args(argv)))


def run() -> None:
    """Run the worker described by the command line and print its result."""
    result: dict[str, Any] = uvloop.run(main(parse()))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    run()
