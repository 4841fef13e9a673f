"""One load process of ``railcar bench udp``: UDP sockets keeping datagrams in flight, counted in a window.

Run as ``python -m railcar.bench.udp_load --port P ...``; prints ``start`` when the
measured window opens, then one JSON object.  A datagram unanswered for ``RESEND_AFTER``
seconds is counted lost and replaced, so a loss never stalls a socket for the rest of
the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import time
from typing import Any

import uvloop

RESEND_AFTER = 0.2
_SEQ = struct.Struct("<Q")


class Pinger(asyncio.DatagramProtocol):
    """A connected UDP socket with ``window`` numbered datagrams in flight; each echo sends the next."""

    def __init__(self, tally: Tally, size: int, window: int) -> None:
        self.tally = tally
        self.filler = b"u" * (size - _SEQ.size)
        self.window = window
        self.seq = 0
        self.owed: dict[int, float] = {}  # sequence number -> when sent
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Fill the window."""
        self.transport = transport  # type: ignore[assignment]
        for _ in range(self.window):
            self.send()

    def send(self) -> None:
        """Send the next numbered datagram."""
        seq = self.seq
        self.seq = seq + 1
        self.owed[seq] = time.monotonic()
        self.transport.sendto(_SEQ.pack(seq) + self.filler)  # type: ignore[union-attr]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """Count an echo of a datagram still owed and send the next; a wrong echo is an error.

        An echo of a datagram already counted lost (the machine stalled past
        ``RESEND_AFTER``) is late, not wrong: it is ignored.
        """
        if len(data) != _SEQ.size + len(self.filler) or data[_SEQ.size :] != self.filler:
            self.tally.errors += 1
            return
        if self.owed.pop(_SEQ.unpack_from(data)[0], None) is None:
            return
        self.tally.echoed += 1
        self.send()

    def error_received(self, exc: Exception) -> None:
        """An ICMP error: the server is gone."""
        self.tally.errors += 1

    def resend_lost(self, now: float) -> None:
        """Count datagrams owed for longer than ``RESEND_AFTER`` as lost and send new ones."""
        late = [seq for seq, sent in self.owed.items() if now - sent > RESEND_AFTER]
        for seq in late:
            del self.owed[seq]
            self.tally.lost += 1
            self.send()


class Tally:
    """Counters shared by the sockets of one process."""

    def __init__(self) -> None:
        self.echoed = 0
        self.lost = 0
        self.errors = 0


async def run(
    host: str, port: int, sockets: int, size: int, window: int, warmup: float, seconds: float
) -> dict[str, float]:
    """Drive ``sockets`` sockets; return echoes, losses and errors in the measured window."""
    loop = asyncio.get_running_loop()
    tally = Tally()
    pingers: list[Pinger] = []
    for _ in range(sockets):
        _, pinger = await loop.create_datagram_endpoint(
            lambda: Pinger(tally, size, window), remote_addr=(host, port)
        )
        pingers.append(pinger)

    async def resend() -> None:
        while True:
            await asyncio.sleep(RESEND_AFTER / 2)
            now = time.monotonic()
            for pinger in pingers:
                pinger.resend_lost(now)

    resender = loop.create_task(resend())
    await asyncio.sleep(warmup)
    print("start", flush=True)
    start = (tally.echoed, tally.lost, tally.errors)
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    end, elapsed = (tally.echoed, tally.lost, tally.errors), time.perf_counter() - started
    resender.cancel()
    for pinger in pingers:
        if pinger.transport is not None:
            pinger.transport.close()
    return {
        "echoed": end[0] - start[0],
        "lost": end[1] - start[1],
        "errors": end[2] - start[2],
        "elapsed": elapsed,
    }


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run the load, print the counts as JSON."""
    parser = argparse.ArgumentParser(prog="railcar.bench.udp_load")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sockets", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    result = uvloop.run(
        run(args.host, args.port, args.sockets, args.size, args.window, args.warmup, args.seconds)
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
