"""Three ``railcar nats serve`` processes behind one subject; one is SIGKILLed under load.

The others take over (nats-server gives each request of the queue group to one live member),
every call is answered, and no request is answered twice.  The client sees every reply, late
ones included: each call's replies come to a subject of its own under a wildcard subscription.
"""

from __future__ import annotations

import asyncio
import json
import re
import select
import signal
import struct
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator

import pytest

import railcar.nats as rn
from railcar.cli.nats_serve import PID_HEADER
from tests.nats.server import NatsServer
from tests.nats.test_client import run

SUBJECT = "svc.load"
CALLS, CONCURRENCY, BATCH = 1500, 30, 8
#: Seconds a call waits for its reply before it is sent again (its process may be dead).
RETRY_AFTER = 1.5


@pytest.fixture
def services(nats_server: NatsServer) -> Iterator[list[tuple[subprocess.Popen[str], str]]]:
    """Three serve processes in one queue group, each with its $SRV instance id, stopped after the test."""
    argv = [sys.executable, "-m", "railcar", "nats", "serve", SUBJECT, "--pid-header"]
    procs = [
        subprocess.Popen([*argv, "--server", nats_server.url], stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    started: list[tuple[subprocess.Popen[str], str]] = []
    try:
        for proc in procs:
            assert proc.stderr is not None
            ready, _, _ = select.select([proc.stderr], [], [], 15)
            line = proc.stderr.readline() if ready else ""
            announced = re.match(rf"serving {SUBJECT} \(queue q\) as railcar (\w+), pid {proc.pid}$", line)
            assert announced, line
            started.append((proc, announced[1]))
        yield started
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


def test_the_others_take_over_from_a_killed_process_and_nothing_is_answered_twice(
    nats_server: NatsServer, services: list[tuple[subprocess.Popen[str], str]]
) -> None:
    pids = {proc.pid for proc, _ in services}
    victim, _ = services[1]

    async def body() -> None:
        nc = await rn.connect(nats_server.url)
        replies: dict[int, list[int]] = defaultdict(list)  # call id -> pids that answered it
        answers: dict[int, asyncio.Future[bytes]] = {}
        wrong: list[int] = []

        def on_reply(msg: rn.Msg) -> None:
            call = int(msg.subject.rsplit(".", 1)[1])
            assert msg.headers is not None
            replies[call].append(int(msg.headers[PID_HEADER]))
            if msg.data != batch_for(call, 1):
                wrong.append(call)
            future = answers[call]
            if not future.done():
                future.set_result(msg.data)

        await nc.subscribe("load.replies.>", cb=on_reply)
        await nc.flush(5)
        killed_after: list[int] = []
        sent: Counter[int] = Counter()
        next_call = 0

        async def caller() -> None:
            nonlocal next_call
            while next_call < CALLS:
                call, next_call = next_call, next_call + 1
                answers[call] = asyncio.get_running_loop().create_future()
                for _attempt in range(5):
                    sent[call] += 1
                    await nc.publish(SUBJECT, batch_for(call, 0), reply=f"load.replies.{call}")
                    try:
                        await asyncio.wait_for(asyncio.shield(answers[call]), RETRY_AFTER)
                        break
                    except TimeoutError:
                        continue  # its process died with it: another one gets it now
                if call == CALLS // 3:
                    victim.send_signal(signal.SIGKILL)  # mid-load, calls in flight on it
                    killed_after.append(sum(1 for f in answers.values() if f.done()))

        started = time.monotonic()
        await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))
        assert time.monotonic() - started < 15
        assert killed_after
        assert victim.wait(5) == -signal.SIGKILL

        # Replies still on their way from the living: wait until each has sent as many as it served.
        for _, instance in services[0::2]:
            for _ in range(100):
                stats = json.loads((await nc.request(f"$SRV.STATS.railcar.{instance}", b"", 5)).data)
                pid = int(stats["metadata"]["pid"])
                served = stats["endpoints"][0]["num_requests"]
                if sum(who.count(pid) for who in replies.values()) >= served:
                    break
                await asyncio.sleep(0.05)
        await nc.flush(5)
        await nc.close()

        assert sorted(replies) == list(range(CALLS)), "a call was never answered"
        twice = {call: who for call, who in replies.items() if len(who) > 1}
        assert not twice, f"answered more than once: {dict(list(twice.items())[:5])}"
        assert not wrong
        answered_by = Counter(who[0] for who in replies.values())
        assert set(answered_by) <= pids
        assert len(answered_by) >= 2
        assert victim.pid in answered_by  # it served before it died

    run(body(), 20)


def batch_for(call: int, plus: int) -> bytes:
    """The int32 batch of one call (the service answers each number plus one)."""
    return struct.pack(f"<{BATCH}i", *(call * BATCH + i + plus for i in range(BATCH)))
