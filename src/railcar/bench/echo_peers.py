"""Minimal echo servers railcar is compared with: what a user would write without railcar.

TCP (the protocol and streams APIs) and UDP (the DatagramProtocol), on uvloop or the stdlib
loop.  Run as ``python -m railcar.bench.echo_peers NAME --port 0``; prints ``listening on HOST:PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable
from typing import Any

PEERS = ("uvloop-protocol", "asyncio-protocol", "asyncio-streams", "uvloop-datagram", "asyncio-datagram")


class EchoProtocol(asyncio.Protocol):
    """The textbook asyncio echo protocol."""

    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        """Echo."""
        self.transport.write(data)


class EchoDatagramProtocol(asyncio.DatagramProtocol):
    """The textbook asyncio UDP echo protocol."""

    transport: asyncio.DatagramTransport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """Echo."""
        self.transport.sendto(data, addr)


async def _echo_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _serve(name: str, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server: asyncio.AbstractServer | asyncio.BaseTransport
    if name.endswith("-datagram"):
        server, _ = await loop.create_datagram_endpoint(EchoDatagramProtocol, local_addr=(host, port))
        bound = server.get_extra_info("sockname")
    else:
        if name == "asyncio-streams":
            server = await asyncio.start_server(_echo_stream, host, port, backlog=2048)
        else:
            server = await loop.create_server(EchoProtocol, host, port, backlog=2048)
        bound = server.sockets[0].getsockname()
    print(f"listening on {bound[0]}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main(argv: list[str] | None = None) -> None:
    """Run the named peer until SIGTERM."""
    parser = argparse.ArgumentParser(prog="railcar.bench.echo_peers")
    parser.add_argument("name", choices=PEERS)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    runner: Callable[..., None] = asyncio.run
    if args.name.startswith("uvloop"):
        import uvloop  # noqa: PLC0415 - only this peer needs it

        runner = uvloop.run
    runner(_serve(args.name, args.host, args.port))


if __name__ == "__main__":
    main()
