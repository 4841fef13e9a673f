"""Services over a real nats-server: the $SRV protocol as NATS tools read it, batches in a queue group."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest
from nats.micro.service import ServiceInfo, ServicePing, ServiceStats

import railcar.nats as rn
from railcar.errors import RemoteError
from railcar.nats.batches import batch_handler, call_array, call_batch
from railcar.nats.service import ServiceError, add_service
from tests.nats.server import NatsServer


def run(coro: Any, timeout: float = 30.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def increment_all(numbers: list[int]) -> list[int]:
    if any(n < 0 for n in numbers):
        raise ServiceError(422, "negative numbers are not served")
    return [n + 1 for n in numbers]


async def ask(nc: rn.Client, subject: str) -> Any:
    """The JSON a $SRV subject answers."""
    return json.loads((await nc.request(subject, b"", timeout=2)).data)


def test_srv_ping_info_and_stats_read_as_nats_micro_reads_them(nats_server: NatsServer) -> None:
    async def body() -> None:
        async with await rn.connect(nats_server.url) as server_side, await rn.connect(nats_server.url) as nc:
            service = await add_service(
                server_side, "adder", "1.2.3", description="adds one", metadata={"k": "v"}
            )
            await service.add_endpoint("inc", batch_handler(increment_all, "int32"), subject="adder.inc")
            await server_side.flush()
            assert await call_batch(nc, "adder.inc", [1, 2, 3], "int32") == [2, 3, 4]
            with pytest.raises(RemoteError, match="422 negative numbers are not served"):
                await call_batch(nc, "adder.inc", [-1], "int32")
            for subject in ("$SRV.PING", "$SRV.PING.adder", f"$SRV.PING.adder.{service.id}"):
                ping = ServicePing.from_dict(json.loads((await nc.request(subject, b"", timeout=2)).data))
                assert (ping.name, ping.id, ping.version, ping.metadata) == (
                    "adder",
                    service.id,
                    "1.2.3",
                    {"k": "v"},
                )
            info = ServiceInfo.from_dict(
                json.loads((await nc.request("$SRV.INFO.adder", b"", timeout=2)).data)
            )
            assert info.description == "adds one"
            assert [(e.name, e.subject, e.queue_group) for e in info.endpoints] == [("inc", "adder.inc", "q")]
            stats = ServiceStats.from_dict(await ask(nc, "$SRV.STATS"))
            (endpoint,) = stats.endpoints
            assert (endpoint.num_requests, endpoint.num_errors) == (2, 1)
            assert endpoint.last_error == "422:negative numbers are not served"
            assert endpoint.processing_time > 0
            await service.stop()
            with pytest.raises(rn.NoResponders):
                await nc.request("$SRV.PING.adder", b"", timeout=2)

    run(body())


def test_three_instances_share_a_subject_and_the_others_take_over_from_one_that_leaves(
    nats_server: NatsServer,
) -> None:
    async def body() -> None:
        members = [await rn.connect(nats_server.url, reconnect=False) for _ in range(3)]
        try:
            await share_a_subject(members)
        finally:
            for member in members:
                await member.close()

    async def share_a_subject(members: list[rn.Client]) -> None:
        services = []
        for member in members:
            service = await add_service(member, "adder", "1.0.0")
            await service.add_endpoint("inc", batch_handler(increment_all, "int32"), subject="adder.inc")
            await member.flush()
            services.append(service)
        async with await rn.connect(nats_server.url) as nc:
            batch = list(range(100))
            for _ in range(60):
                assert await call_batch(nc, "adder.inc", batch, "int32") == [n + 1 for n in batch]
            assert all(s.endpoints[0].num_requests > 0 for s in services)  # spread over all three
            # One instance leaves for good the way a service shuts down: the server has its
            # unsubscription before its connection closes, so no request is routed to it after
            # (a request in flight to a SIGKILLed process is test_service_processes' case).
            await services[1].stop()
            await members[1].close()
            for _ in range(60):
                assert await call_batch(nc, "adder.inc", batch, "int32", timeout=5) == [n + 1 for n in batch]
            # Every call was answered by exactly one instance: nothing twice, nothing lost.
            assert sum(s.endpoints[0].num_requests for s in services) == 120
            records = np.arange(1000, dtype="<i4")
            await services[0].add_endpoint(
                "inc-array", batch_handler(lambda a: a + np.int32(1), "int32", "array"), subject="adder.arr"
            )
            await members[0].flush()
            assert (await call_array(nc, "adder.arr", records, "int32") == records + 1).all()

    run(body())
