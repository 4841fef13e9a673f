"""A client that knows one node of a cluster moves to another when its node dies, resubscribed."""

from __future__ import annotations

import asyncio
import socket
import time

import railcar.nats as rn
from railcar.nats import Msg
from tests.nats.conftest import StartNats
from tests.nats.server import NatsServer
from tests.nats.test_client import connect, run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cluster_config(port: int, routes: list[int]) -> str:
    route_urls = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in routes)
    return f"cluster {{\n  name: railcar\n  listen: 127.0.0.1:{port}\n  routes: [{route_urls}]\n}}\n"


def test_client_fails_over_to_a_node_learnt_from_info(start_nats: StartNats) -> None:
    ports = [free_port() for _ in range(3)]
    nodes = [start_nats(cluster_config(port, [p for p in ports if p != port])) for port in ports]

    async def body() -> None:
        ours = await connect(nodes[0], reconnect_wait=0.1)
        other = await connect(nodes[2])
        try:
            for _ in range(200):  # the routes form, then INFO advertises the other nodes
                if len(ours.servers) == 3:
                    break
                await asyncio.sleep(0.05)
            assert len(ours.servers) == 3
            sub = await ours.subscribe("cluster.x")
            await ours.flush(5)
            await asyncio.sleep(0.2)  # the subscription propagates over the routes
            await other.publish("cluster.x", b"before")
            await other.flush(5)
            assert (await sub.next_msg(5)).data == b"before"
            nodes[0].kill()
            for _ in range(200):
                if ours.connected and ours.connected_url != nodes[0].url:
                    break
                await asyncio.sleep(0.05)
            assert ours.connected_url in {nodes[1].url, nodes[2].url}
            await ours.flush(5)
            got: list[Msg] = []
            for _ in range(100):  # until the resubscription has reached node 2
                await other.publish("cluster.x", b"after")
                await other.flush(5)
                try:
                    got.append(await sub.next_msg(0.1))
                    break
                except TimeoutError:
                    continue
            assert got
            assert got[0].data == b"after"
        finally:
            await ours.close()
            await other.close()

    run(body(), 60)


async def _interest_reaches(seen: asyncio.Event, subject: str, publishers: list[rn.Client]) -> None:
    """Probe through each publisher's node until ``seen`` is set: the interest crossed the routes."""
    for publisher in publishers:
        seen.clear()
        for _ in range(200):
            await publisher.publish(subject, b"probe")
            await publisher.flush(5)
            try:
                await asyncio.wait_for(seen.wait(), 0.05)
                break
            except TimeoutError:
                continue
        else:
            raise AssertionError(f"no probe through {publisher.connected_url} arrived")


def stop_then_kill(node: NatsServer) -> None:
    """Freeze the node, so what is written to it from now on stays unread, then kill it."""
    node.freeze()
    time.sleep(0.3)
    node.kill()


def test_no_publish_acknowledged_by_flush_is_lost_when_its_node_dies(start_nats: StartNats) -> None:
    ports = [free_port() for _ in range(3)]
    nodes = [start_nats(cluster_config(port, [p for p in ports if p != port])) for port in ports]
    batch, batches_after = 50, 20

    async def body() -> None:
        publisher = await connect(nodes[0], reconnect_wait=0.1, max_reconnects=50)
        watcher = await connect(nodes[2])  # on a node that stays
        helper = await connect(nodes[1])
        received: set[int] = set()
        probed = asyncio.Event()

        def on_stream(msg: Msg) -> None:
            if msg.data == b"probe":
                probed.set()
            else:
                received.add(int(msg.data))

        try:
            for _ in range(200):  # the routes form, then INFO advertises the other nodes
                if len(publisher.servers) == 3:
                    break
                await asyncio.sleep(0.05)
            assert len(publisher.servers) == 3
            await watcher.subscribe("stream", cb=on_stream)
            own = await publisher.subscribe("stream.own")
            await watcher.flush(5)
            await _interest_reaches(probed, "stream", [publisher, helper])

            acked: list[int] = []
            failures: list[BaseException] = []
            seq = moved_at = 0
            killer: asyncio.Future[None] | None = None
            loop = asyncio.get_running_loop()
            while moved_at == 0 or len(acked) < moved_at + batches_after * batch:
                first = seq
                for i in range(batch):
                    seq += 1
                    await publisher.publish("stream", b"%d" % seq)
                    if i == batch // 2:
                        await asyncio.sleep(0)  # the first half leaves in a write of its own
                try:
                    await publisher.flush(5)
                except (rn.ConnectionLost, rn.RequestTimeout) as exc:
                    failures.append(exc)  # not acknowledged: may or may not have arrived
                else:
                    acked.extend(range(first + 1, seq + 1))
                if killer is None and len(acked) >= 20 * batch:
                    killer = loop.run_in_executor(None, stop_then_kill, nodes[0])  # while we publish
                if killer is not None and killer.done() and moved_at == 0 and publisher.connected:
                    moved_at = len(acked)
                assert seq < 200_000, "the publisher never got going again on another node"
            assert killer is not None
            await killer
            assert publisher.connected_url in {nodes[1].url, nodes[2].url}
            assert publisher.reconnects == 1
            assert failures, "the kill should have cost at least one flush"
            assert all(isinstance(exc, rn.ConnectionLost) for exc in failures), failures

            # Resubscribed on the new node: its own subscription hears the helper on node 1.
            for _ in range(100):
                await helper.publish("stream.own", b"x")
                await helper.flush(5)
                try:
                    assert (await own.next_msg(0.1)).data == b"x"
                    break
                except TimeoutError:
                    continue
            else:
                raise AssertionError("the publisher's subscription was not made again on its new node")

            # Every acknowledged publish reached the watcher on another node.
            await publisher.flush(5)
            await watcher.flush(5)
            for _ in range(100):
                if received.issuperset(acked):
                    break
                await asyncio.sleep(0.05)
            missing = sorted(set(acked) - received)
            assert not missing, f"{len(missing)} acknowledged publishes lost, first {missing[:5]}"
            assert len(acked) >= (20 + batches_after) * batch
        finally:
            for nc in (publisher, watcher, helper):
                await nc.close()

    run(body(), 60)
