"""``railcar bench kvmem``: memory a million keys take in railcar's key–value server and in redis-server."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import click

from railcar.bench.kv import kv_server
from railcar.bench.procs import parse_engines
from railcar.errors import RailcarError
from railcar.proto.resp import encode_command
from railcar.proto.resp_client import STORED, encode_set, frame_reply
from railcar.report import Result, document, emit, header, json_option, md_option, table

#: The issue's ceiling for railcar's memory over redis-server's ``used_memory``.
TARGET = 2.0
_BATCH = 1000


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid``; raises RailcarError if it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError as exc:
        raise RailcarError(f"cannot read the memory of process {pid}: {exc}") from exc
    raise RailcarError(f"process {pid} reports no VmRSS")


class _Replies:
    """One connection's replies, read whole (``frame_reply``) as the requests expect them."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def next(self) -> bytes:
        """The next whole reply; raises RailcarError if the server closes first."""
        while (framed := frame_reply(self.buffer)) is None:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RailcarError("the server closed the connection")
            self.buffer += chunk
        end = framed[1]
        reply = bytes(self.buffer[:end])
        del self.buffer[:end]
        return reply


def load_keys(port: int, keys: int, value_size: int) -> None:
    """SET ``keys`` distinct keys to distinct values of ``value_size`` bytes, 1,000 per write."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        replies = _Replies(sock)
        for start in range(0, keys, _BATCH):
            numbers = range(start, min(start + _BATCH, keys))
            sock.sendall(
                b"".join(
                    encode_set(b"key:%d" % n, (b"%d" % n).rjust(value_size, b"v")[:value_size])
                    for n in numbers
                )
            )
            for _ in numbers:
                reply = replies.next()
                if reply != STORED:
                    raise RailcarError(f"unexpected reply while loading: {reply[:80]!r}")
        sock.sendall(encode_command("DBSIZE"))
        if replies.next() != b":%d\r\n" % keys:
            raise RailcarError("the server does not hold every key loaded")


def _used_memory(port: int) -> int:
    """``used_memory`` from INFO memory."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(encode_command("INFO", "memory"))
        info = _Replies(sock).next()
    return int(info.split(b"used_memory:", 1)[1].split(b"\r\n", 1)[0])


def _measure(system: str, keys: int, value_size: int) -> dict[str, float]:
    with kv_server(system, None) as (port, pid):
        before = rss_bytes(pid)
        load_keys(port, keys, value_size)
        grown = rss_bytes(pid) - before
        used = _used_memory(port)
    return {"rss_growth": grown, "used_memory": used}


def _markdown(doc: dict[str, Any]) -> str:
    rows = [
        [
            r["system"],
            f"{r['rss_growth'] / 2**20:.1f} MiB",
            f"{r['rss_growth'] / doc['keys']:.0f} B",
            f"{r['used_memory'] / 2**20:.1f} MiB" if r["system"] == "redis-server" else "",
            f"{r['ratio']:.2f}×" if "ratio" in r else "",
            f"≤ {TARGET:g}×" if "ratio" in r else "",
        ]
        for r in doc["results"]
    ]
    return "\n".join(
        [
            "## Key–value server memory (1,000,000 keys)",
            "",
            header(doc),
            "",
            (
                f"Each server is started fresh and primed, then loaded with {doc['keys']:,} distinct keys "
                f"(`key:N`) set to distinct {doc['value_size']}-byte values, 1,000 SETs per write; its "
                "resident memory (VmRSS) is read before and after. Ratio: railcar's growth in resident "
                "memory over redis-server's `used_memory` (what the issue compares with), and redis-server's "
                "own resident growth beside it for a like-for-like reading."
            ),
            "",
            "- **redis-server**: Debian's redis-server 7.0, `--save '' --appendonly no`",
            "- **railcar-E**: `railcar serve kv --engine E`, defaults otherwise",
            "",
            table(["system", "resident growth", "per key", "used_memory", "ratio", "target"], rows),
        ]
    )


@click.command("kvmem")
@click.option(
    "--engines", default="epoll", show_default=True, help="Comma-separated railcar engines to measure."
)
@click.option("--keys", type=click.IntRange(1000), default=1_000_000, show_default=True, help="Keys to load.")
@click.option(
    "--value-size", type=click.IntRange(1, 4096), default=16, show_default=True, help="Bytes per value."
)
@json_option
@md_option
def bench_kvmem(engines: str, keys: int, value_size: int, as_json: bool, md: Path | None) -> None:
    """Measure the memory railcar's key–value server and redis-server take for the same keys."""
    systems = [f"railcar-{engine}" for engine in parse_engines(engines)]
    measured = {system: _measure(system, keys, value_size) for system in [*systems, "redis-server"]}
    redis_used = measured["redis-server"]["used_memory"]
    results: list[Result] = []
    for system, figures in measured.items():
        result: Result = {"system": system, **figures}
        if system != "redis-server":
            result["ratio"] = round(figures["rss_growth"] / redis_used, 3)
            result["target"] = TARGET
        results.append(result)
        if not as_json:
            click.echo(f"{system:<16} resident growth {figures['rss_growth'] / 2**20:.1f} MiB", err=True)
    doc = document(results, 0.0, keys=keys, value_size=value_size)
    emit(doc, _markdown(doc), "kvmem", as_json, md)
