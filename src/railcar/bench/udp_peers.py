"""Minimal UDP echo servers railcar is compared with: the textbook asyncio DatagramProtocol.

Run as ``python -m railcar.bench.udp_peers NAME --port 0``; prints ``listening on HOST:PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable
from typing import Any

PEERS = ("uvloop-datagram", "asyncio-datagram")


class EchoDatagramProtocol(asyncio.DatagramProtocol):
    """The textbook asyncio UDP echo protocol."""

    transport: asyncio.DatagramTransport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """Echo."""
        self.transport.sendto(data, addr)


async def _serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(EchoDatagramProtocol, local_addr=(host, port))
    bound = transport.get_extra_info("sockname")
    print(f"listening on {bound[0]}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    transport.close()


def main(argv: list[str] | None = None) -> None:
    """Run the named peer until SIGTERM."""
    parser = argparse.ArgumentParser(prog="railcar.bench.udp_peers")
    parser.add_argument("name", choices=PEERS)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    runner: Callable[..., None] = asyncio.run
    if args.name.startswith("uvloop"):
        import uvloop  # noqa: PLC0415 - only this peer needs it

        runner = uvloop.run
    runner(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
