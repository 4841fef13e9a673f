"""Start measured servers as subprocesses and read what the kernel says about them."""

from __future__ import annotations

import contextlib
import json
import os
import select
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from railcar.bench.prime import Prime, prime_server
from railcar.engine import server_class
from railcar.errors import EngineUnavailable, RailcarError
from railcar.procs import Command

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class ServerProcess:
    """A server subprocess and the port it reported on its first line."""

    proc: subprocess.Popen[str]
    host: str
    port: int

    @property
    def pid(self) -> int:
        """Process id of the server."""
        return self.proc.pid


@contextlib.contextmanager
def running_server(
    argv: Sequence[str], cpus: set[int] | None = None, timeout: float = 20.0, prime: Prime | None = None
) -> Iterator[ServerProcess]:
    """Run ``python -m <argv>`` until the block ends, primed by ``prime`` (see ``bench.prime``) if given.

    Raises RailcarError if the server does not start or fails its prime.
    """
    server = Command(
        [sys.executable, "-m", *argv], cpus=cpus, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ).start()
    proc = server.proc
    try:
        line = server.first_line(timeout)
        if not line.startswith("listening on "):
            _, err = proc.communicate(timeout=5)
            raise RailcarError(f"{' '.join(argv)} did not start: {line.strip()} {err.strip()}")
        host, _, port = line.removeprefix("listening on ").strip().rpartition(":")
        started = ServerProcess(proc, host.strip("[]"), int(port))
        if prime is not None:
            prime_server(" ".join(argv), started.host, started.port, prime)
        yield started
    finally:
        server.stop()


@dataclass(frozen=True)
class LoadRun:
    """What ``measure_load`` saw: the loads' JSON results and CPU use over the measured window."""

    results: list[dict[str, Any]]
    server_cpu: float  # CPUs busy
    load_cpu: float  # CPUs busy, all load processes together
    server_kernel: float  # the share of the server's CPU time spent in the kernel, 0 to 1


def measure_load(
    server_argv: Sequence[str], prime: Prime, client_argvs: list[list[str]], timeout: float
) -> LoadRun:
    """Run loads against a pinned, primed server and return their results and the CPU each side used.

    Each load process prints ``start`` when its measured window opens and then one JSON
    object; CPU times are sampled between the last start and the first result.  Raises
    RailcarError if the server or a load process fails.
    """
    server_cpus, load_cpus = cpu_split()
    with running_server(server_argv, cpus=server_cpus, prime=prime) as server:
        loads = [
            Command(
                [sys.executable, "-m", *argv, "--host", server.host, "--port", str(server.port)],
                cpus=load_cpus,
                stdout=subprocess.PIPE,
                stderr=None,
                text=True,
            ).start()
            for argv in client_argvs
        ]
        try:
            for load in loads:
                if load.first_line(timeout).strip() != "start":
                    raise RailcarError(f"load {' '.join(client_argvs[0])} failed before measuring")
            pids = [server.pid] + [load.pid for load in loads]
            start, wall_start = [cpu_times(pid) for pid in pids], time.perf_counter()
            outputs = [load.proc.stdout for load in loads if load.proc.stdout is not None]
            select.select(outputs, [], [], timeout)  # until the first result is due
            elapsed = time.perf_counter() - wall_start
            used = [
                (user - user_0, system - system_0)
                for (user, system), (user_0, system_0) in zip(map(cpu_times, pids), start, strict=True)
            ]
            results = []
            for load in loads:
                line = load.first_line(timeout)
                if not line:
                    raise RailcarError(f"load {' '.join(client_argvs[0])} failed while measuring")
                results.append(json.loads(line))
        finally:
            for load in loads:
                load.stop()
    server_user, server_system = used[0]
    return LoadRun(
        results,
        server_cpu=(server_user + server_system) / elapsed,
        load_cpu=sum(user + system for user, system in used[1:]) / elapsed,
        server_kernel=server_system / max(server_user + server_system, 1e-9),
    )


def cpu_medians(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    """The median server and load CPU (in CPUs busy) of several ``measure_load`` runs."""
    return {key: round(statistics.median(run[key] for run in runs), 3) for key in ("server_cpu", "load_cpu")}


def cpu_cells(result: dict[str, Any]) -> list[str]:
    """The server and load CPU of a result as table cells, in percent of one CPU."""
    return [f"{result['server_cpu'] * 100:.0f}%", f"{result['load_cpu'] * 100:.0f}%"]


Key = TypeVar("Key", bound=Hashable)


def alternate(
    rounds: int,
    measures: Mapping[Key, Callable[[], dict[str, float]]],
    describe: Callable[[Key, dict[str, float]], str] | None,
) -> dict[Key, list[dict[str, float]]]:
    """Run every measurement once per round, in turn, so drift on the host hits them alike.

    ``describe`` gives each run's progress line (after "round i/n"), printed on stderr; None
    prints nothing.  Returns every key's runs, in round order.
    """
    runs: dict[Key, list[dict[str, float]]] = {key: [] for key in measures}
    for round_number in range(rounds):
        for key, measure in measures.items():
            measured = measure()
            runs[key].append(measured)
            if describe is not None:
                click.echo(f"round {round_number + 1}/{rounds}  {describe(key, measured)}", err=True)
    return runs


def cpu_text(measured: dict[str, float]) -> str:
    """The server and load CPU of one run, for a progress line."""
    return f"CPU server {measured['server_cpu'] * 100:3.0f}% load {measured['load_cpu'] * 100:3.0f}%"


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds process ``pid`` has used so far; raises OSError if it is gone."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return int(fields[11]) / _CLOCK_TICKS, int(fields[12]) / _CLOCK_TICKS


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds process ``pid`` has used so far; raises OSError if it is gone."""
    return sum(cpu_times(pid))


def wait_idle(pid: int, timeout: float = 30.0) -> None:
    """Return once process ``pid`` uses under a tenth of a CPU over 0.2 s, or after ``timeout`` s.

    A server still closing a load's connections (the threads engine ends thousands of
    threads) would take its CPU from the next run of another server pinned there.
    Raises OSError if the process is gone.
    """
    deadline = time.monotonic() + timeout
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = cpu_seconds(pid)
        if now - last < 0.02:
            return
        last = now


def cpu_split() -> tuple[set[int], set[int]]:
    """Split this machine's CPUs into one for the server and the rest for the load."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return set(cpus), set(cpus)
    return {cpus[0]}, set(cpus[1:])


def parse_engines(value: str) -> list[str]:
    """The engines a comma-separated ``--engines`` value names; raises click.BadParameter (unknown, none)."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    for name in names:
        try:
            server_class(name)
        except EngineUnavailable as exc:
            raise click.BadParameter(str(exc), param_hint="--engines") from exc
    if not names:
        raise click.BadParameter("no engine given", param_hint="--engines")
    return names
