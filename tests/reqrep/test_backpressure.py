"""Against a real server process: ten million requests stay bounded; a killed server fails calls fast."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from railcar.batching import AsyncBatcher
from railcar.bench.procs import running_server
from railcar.errors import ConnectionLost
from railcar.limits import rss_bytes
from railcar.reqrep import Client

TOTAL = 10_000_000
QUEUE = 10_000


def test_ten_million_requests_never_exceed_the_configured_queue() -> None:
    with running_server(("railcar", "serve", "reqrep", "--codec", "int32", "--port", "0")) as server:

        async def main() -> tuple[int, int, int, int]:
            client = await Client.connect(server.host, server.port, max_in_flight=2 * QUEUE)
            replies = 0
            most_in_flight = 0

            async def send(batch: list[int]) -> None:
                nonlocal replies, most_in_flight
                pending = asyncio.ensure_future(client.call_many(batch))
                await asyncio.sleep(0)
                most_in_flight = max(most_in_flight, client.in_flight)
                result = await pending
                assert result[0] == batch[0] + 1
                assert result[-1] == batch[-1] + 1
                replies += len(result)

            batcher: AsyncBatcher[int] = AsyncBatcher(send, batch_size=1000, window=0.001, queue_size=QUEUE)
            longest = 0
            baseline = peak = rss_bytes(os.getpid())
            for item in range(TOTAL):
                if not batcher.try_add(item):
                    await batcher.add(item)
                if not item % 4099:
                    longest = max(longest, len(batcher))
                    if not item % (4099 * 64):
                        peak = max(peak, rss_bytes(os.getpid()))
            await batcher.close()
            await client.close()
            return replies, longest, most_in_flight, peak - baseline

        replies, longest, most_in_flight, growth = asyncio.run(main())
    assert replies == TOTAL
    assert 0 < longest <= QUEUE
    assert 0 < most_in_flight <= 2 * QUEUE
    # Ten million ints held at once would be hundreds of MiB; the bounded queue holds 10,000.
    assert growth < 64 * 1024 * 1024


def test_server_process_killed_mid_batch_fails_pending_calls_fast() -> None:
    with running_server(("railcar", "serve", "reqrep", "--codec", "int32", "--port", "0")) as server:

        async def main() -> float:
            # Room for everything: calls still waiting for room or for the transport to take
            # writes are not sent yet, so a loss does not fail them (they wait to be sent on
            # the next connection, within their timeout).
            client = await Client.connect(
                server.host, server.port, max_in_flight=10_000_000, write_buffer=64 * 1024 * 1024
            )
            assert await client.call(1) == 2
            big = asyncio.ensure_future(client.call_many(range(5_000_000)))
            small = [asyncio.ensure_future(client.call(i)) for i in range(100)]  # behind the batch
            while client.in_flight <= 100:  # kill once all is sent, not while the batch is encoded
                await asyncio.sleep(0.01)
            os.kill(server.pid, signal.SIGKILL)
            killed = time.monotonic()
            for pending in (big, *small):
                with pytest.raises(ConnectionLost):
                    await asyncio.wait_for(pending, 5)
            return time.monotonic() - killed

        assert asyncio.run(main()) < 2.0
