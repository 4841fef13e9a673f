"""A client that knows one node of a cluster moves to another when its node dies, resubscribed."""

from __future__ import annotations

import asyncio
import socket

from railcar.nats import Msg
from tests.nats.conftest import StartNats
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
