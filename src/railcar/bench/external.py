"""Real peers from Debian's packages — redis-server, nginx, redis-benchmark, wrk — run on loopback."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from railcar.bench.prime import RESP, http_get, prime_server
from railcar.errors import RailcarError
from railcar.procs import Command, free_port, pin

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


@contextlib.contextmanager
def redis_server(cpus: set[int] | None = None) -> Iterator[tuple[int, int]]:
    """Run redis-server (no persistence) on a free loopback port, primed; yield (port, pid)."""
    port = free_port()
    # Its own directory: a command that writes files (BGREWRITEAOF, CONFIG SET appendonly)
    # must not leave them in the caller's working directory.
    with tempfile.TemporaryDirectory(prefix="railcar-redis-") as workdir:
        redis = Command(
            [
                *(tool("redis-server"), "--bind", "127.0.0.1", "--port", str(port), "--dir", workdir),
                *("--save", "", "--appendonly", "no"),
            ],
            cpus=cpus,
        ).start()
        try:
            redis.wait_listening(port)
            prime_server("redis-server", "127.0.0.1", port, RESP)
            yield port, redis.pid
        finally:
            redis.stop()


@contextlib.contextmanager
def nginx_server(cpus: set[int] | None = None) -> Iterator[tuple[int, int]]:
    """Run nginx (one worker, plaintext reply, no logs) on a free port, primed; yield (port, worker pid)."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="railcar-nginx-") as prefix:
        config = Path(prefix, "nginx.conf")
        config.write_text(_nginx_config(port, prefix), encoding="utf-8")
        nginx = Command(
            [tool("nginx"), "-p", prefix, "-c", str(config), "-e", "stderr"], stderr=subprocess.PIPE
        ).start()
        try:
            nginx.wait_listening(port)
            (worker,) = nginx.child_pids()
            pin(worker, cpus)
            prime_server("nginx", "127.0.0.1", port, http_get)
            yield port, worker
        finally:
            nginx.stop()


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
