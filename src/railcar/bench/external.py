"""Real peers from Debian's packages — redis-server, nginx, redis-benchmark, wrk — run on loopback."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from railcar.bench.prime import RESP, http_get, prime_server
from railcar.bench.procs import stop_process
from railcar.errors import RailcarError

INSTALL = {
    "redis-server": "apt-get install -y redis-server",
    "redis-benchmark": "apt-get install -y redis-tools",
    "redis-cli": "apt-get install -y redis-tools",
    "nginx": "apt-get install -y nginx-light",
    "wrk": "apt-get install -y wrk",
    "h2load": "apt-get install -y nghttp2-client",
}

PLAINTEXT = "Hello, World!"


def tool(name: str) -> str:
    """The path of an external program; raises RailcarError naming the command that installs it."""
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.access(f"/usr/sbin/{name}", os.X_OK) else None)
    if path is None:
        raise RailcarError(f"{name} is not installed; install it with: {INSTALL.get(name, name)}")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Wait until 127.0.0.1:port accepts; raises RailcarError if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RailcarError(f"{proc.args!r} exited with status {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.02)
    raise RailcarError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


@contextlib.contextmanager
def redis_server(cpus: set[int] | None = None) -> Iterator[tuple[int, int]]:
    """Run redis-server (no persistence) on a free loopback port, primed; yield (port, pid)."""
    port = free_port()
    # Its own directory: a command that writes files (BGREWRITEAOF, CONFIG SET appendonly)
    # must not leave them in the caller's working directory.
    with tempfile.TemporaryDirectory(prefix="railcar-redis-") as workdir:
        proc = subprocess.Popen(
            [
                *(tool("redis-server"), "--bind", "127.0.0.1", "--port", str(port), "--dir", workdir),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _pin(proc.pid, cpus)
            wait_listening(port, proc)
            prime_server("redis-server", "127.0.0.1", port, RESP)
            yield port, proc.pid
        finally:
            stop_process(proc)


@contextlib.contextmanager
def nginx_server(cpus: set[int] | None = None) -> Iterator[tuple[int, int]]:
    """Run nginx (one worker, plaintext reply, no logs) on a free port, primed; yield (port, worker pid)."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="railcar-nginx-") as prefix:
        config = Path(prefix, "nginx.conf")
        config.write_text(_nginx_config(port, prefix), encoding="utf-8")
        proc = subprocess.Popen(
            [tool("nginx"), "-p", prefix, "-c", str(config), "-e", "stderr"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_listening(port, proc)
            (worker,) = child_pids(proc.pid)
            _pin(worker, cpus)
            prime_server("nginx", "127.0.0.1", port, http_get)
            yield port, worker
        finally:
            stop_process(proc)


def _nginx_config(port: int, prefix: str) -> str:
    temp = "\n".join(
        f"    {kind}_temp_path {prefix}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
{temp}
    keepalive_requests 100000000;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            default_type text/plain;
            return 200 "{PLAINTEXT}";
        }}
        location = /error {{
            return 500;
        }}
    }}
}}
"""


def child_pids(pid: int, timeout: float = 5.0) -> list[int]:
    """The child processes of ``pid`` once it has some; raises RailcarError if none appear in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            children = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
            if children:
                return children
        time.sleep(0.01)
    raise RailcarError(f"process {pid} started no workers within {timeout:g} s")


def _pin(pid: int, cpus: set[int] | None) -> None:
    """Pin a process to ``cpus`` (a no-op without them)."""
    if cpus:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, cpus)
