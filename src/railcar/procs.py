"""Start, pin, watch and stop worker processes: the one place railcar does it.

Servers under measurement, real peers (redis-server, nginx), load generators and
serving workers all start the same way (an argv or a forked function, an
environment, a set of CPUs) and stop the same way (SIGTERM, then SIGKILL once
a deadline passes), so the rules live here once.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import IO, Any

from railcar.errors import RailcarError

#: How long a process gets to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0


def pin(pid: int, cpus: set[int] | None) -> None:
    """Restrict process ``pid`` (0: this one) to ``cpus``; a no-op without them or where not permitted."""
    if cpus:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, cpus)


def cpu_of(index: int) -> int:
    """The CPU worker ``index`` is pinned to: the ``index mod n``-th CPU this process may use."""
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[index % len(cpus)]


def stop_process(proc: subprocess.Popen[Any] | BaseProcess, timeout: float = STOP_TIMEOUT) -> None:
    """Send SIGTERM, kill with SIGKILL if still running after ``timeout`` s, reap, close its pipes."""
    if _alive(proc):
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
    reap(proc, timeout)


def reap(proc: subprocess.Popen[Any] | BaseProcess, timeout: float = STOP_TIMEOUT) -> None:
    """Wait up to ``timeout`` s for a process to exit by itself, then SIGKILL it; close its pipes."""
    if isinstance(proc, BaseProcess):
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join()
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def _alive(proc: subprocess.Popen[Any] | BaseProcess) -> bool:
    if isinstance(proc, BaseProcess):
        return proc.is_alive()
    return proc.poll() is None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_listening(port: int, proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """Wait until 127.0.0.1:port accepts; raises RailcarError if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RailcarError(f"{proc.args!r} exited with status {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.02)
    raise RailcarError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


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


def first_line(stream: IO[str], timeout: float) -> str:
    """The next line of a process's text output, or "" if none comes within ``timeout`` s."""
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else ""


@dataclass(frozen=True)
class Command:
    """A program to start: its argv, extra environment, the CPUs it is pinned to, where its output goes."""

    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    cpus: set[int] | None = None
    stdout: int | None = subprocess.DEVNULL
    stderr: int | None = subprocess.DEVNULL
    text: bool = False

    def start(self) -> Spawned:
        """Start the program, pinned before it has run much; raises OSError if it cannot be executed."""
        env = {**os.environ, **self.env} if self.env else None
        proc: subprocess.Popen[Any] = subprocess.Popen(
            list(self.argv),
            stdin=subprocess.DEVNULL,
            stdout=self.stdout,
            stderr=self.stderr,
            text=self.text,
            env=env,
        )
        pin(proc.pid, self.cpus)
        return Spawned(proc)


@dataclass
class Spawned:
    """A started Command: wait for it to listen, find its children, stop it."""

    proc: subprocess.Popen[Any]

    @property
    def pid(self) -> int:
        """Process id."""
        return self.proc.pid

    def wait_listening(self, port: int, timeout: float = 10.0) -> None:
        """Wait until 127.0.0.1:port accepts; raises RailcarError if the process exits or time runs out."""
        wait_listening(port, self.proc, timeout)

    def child_pids(self, timeout: float = 5.0) -> list[int]:
        """The process's children once it has some; raises RailcarError if none appear in time."""
        return child_pids(self.pid, timeout)

    def first_line(self, timeout: float) -> str:
        """The first line of its stdout (started with ``stdout=PIPE, text=True``), "" after ``timeout``."""
        assert self.proc.stdout is not None
        return first_line(self.proc.stdout, timeout)

    def signal(self, signum: signal.Signals) -> None:
        """Send ``signum`` to the process if it still runs."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signum)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, SIGKILL after ``timeout`` s, reap, close its pipes."""
        stop_process(self.proc, timeout)
