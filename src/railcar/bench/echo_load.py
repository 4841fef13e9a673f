"""One load process of ``railcar bench echo``: ping-pong on many connections, counted in a window.

Run as ``python -m railcar.bench.echo_load --port P ...``; prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from functools import partial

import uvloop


class PingPong(asyncio.Protocol):
    """Sends one message, waits for its whole echo, checks it, sends it again."""

    def __init__(self, message: bytes, tally: Tally) -> None:
        self.message = message
        self.size = len(message)
        self.tally = tally
        self.pieces: list[bytes] = []
        self.received = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the first message."""
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.message)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        """Count a round trip once the echo is complete and correct, then send again."""
        if not self.received and data == self.message:
            self.tally.round_trips += 1
            self.transport.write(self.message)  # type: ignore[union-attr]
            return
        self.pieces.append(data)
        self.received += len(data)
        if self.received < self.size:
            return
        echoed = b"".join(self.pieces)
        self.pieces.clear()
        self.received = 0
        if echoed == self.message:
            self.tally.round_trips += 1
        else:
            self.tally.errors += 1
        self.transport.write(self.message)  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        """A connection lost before the end of the run is an error."""
        if not self.tally.stopping:
            self.tally.errors += 1


class Tally:
    """Counters shared by the connections of one process."""

    def __init__(self) -> None:
        self.round_trips = 0
        self.errors = 0
        self.stopping = False


async def run(host: str, port: int, conns: int, size: int, warmup: float, seconds: float) -> dict[str, float]:
    """Drive ``conns`` ping-pong connections; return round trips and errors in the window."""
    loop = asyncio.get_running_loop()
    tally = Tally()
    transports = []
    for index in range(conns):
        message = (os.urandom(8) + index.to_bytes(8, "little")) * (size // 16 + 1)
        transport, _ = await loop.create_connection(partial(PingPong, message[:size], tally), host, port)
        transports.append(transport)
    await asyncio.sleep(warmup)
    print("start", flush=True)
    start_count, start_errors, started = tally.round_trips, tally.errors, time.perf_counter()
    await asyncio.sleep(seconds)
    count, errors, elapsed = tally.round_trips, tally.errors, time.perf_counter() - started
    tally.stopping = True
    for transport in transports:
        transport.close()
    await asyncio.sleep(0)
    return {
        "round_trips": count - start_count,
        "errors": errors - start_errors,
        "elapsed": elapsed,
    }


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run the load, print the counts as JSON."""
    parser = argparse.ArgumentParser(prog="railcar.bench.echo_load")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--conns", type=int, default=50)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    result = uvloop.run(run(args.host, args.port, args.conns, args.size, args.warmup, args.seconds))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
