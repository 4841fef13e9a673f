"""The ``railcar load`` and ``railcar stress`` commands."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from railcar import report
from railcar.errors import RailcarError
from railcar.limits import rss_bytes
from railcar.load import runner
from railcar.load.budget import EXIT_FAILED, FailureBudget, FailureBudgetType
from railcar.load.plan import Plan
from railcar.load.plot import check_available as check_plot_available
from railcar.load.plot import write_png
from railcar.load.report import entry, text
from railcar.load.target import check_datagram_target, check_target, default_procs
from railcar.load.workloads import KEY_SPACE_PROTOCOLS, PROTOCOLS, Workload
from railcar.report import writable_file

_UNITS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(us|µs|ms|s|m|h|)\s*")


class Duration(click.ParamType[float]):
    """A duration such as ``10s``, ``500ms``, ``2m`` or ``1.5`` (seconds); zero only if ``allow_zero``."""

    name = "duration"

    def __init__(self, allow_zero: bool = False) -> None:
        self.allow_zero = allow_zero

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        """Parse the duration into seconds; fails (usage error) on anything else."""
        if isinstance(value, (int, float)):
            seconds = float(value)
        else:
            match = _DURATION.fullmatch(str(value))
            if match is None:
                self.fail(f"{value!r} is not a duration (e.g. 10s, 500ms, 2m)", param, ctx)
            seconds = float(match.group(1)) * _UNITS[match.group(2)]
        if seconds <= 0 and not self.allow_zero:
            self.fail("must be longer than 0", param, ctx)
        return seconds


class Ratio(click.ParamType[tuple[int, int]]):
    """A GET:SET mix such as ``1:1``, ``9:1`` or ``0:1`` (SETs only)."""

    name = "gets:sets"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[int, int]:
        """Parse ``G:S`` into (G, S); fails (usage error) on anything else or on 0:0."""
        if isinstance(value, tuple):
            return value
        gets, colon, sets = str(value).partition(":")
        if not (colon and gets.isdigit() and sets.isdigit()) or int(gets) + int(sets) == 0:
            self.fail(f"{value!r} is not a GET:SET ratio such as 1:1 or 9:1", param, ctx)
        return int(gets), int(sets)


def _message(value: str) -> bytes | int:
    """``--message``: a number is a size in bytes, anything else is sent as it is."""
    return int(value) if value.isdigit() else value.encode()


def load_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options ``railcar load`` and ``railcar stress`` share: target, protocol and pacing."""
    options = [
        click.option("--host", default="127.0.0.1", show_default=True, help="Server to load."),
        click.option(
            "--port",
            type=click.IntRange(1, 65535),
            required=True,
            help="Its port (UDP for udp-echo, else TCP).",
        ),
        click.option(
            "--protocol",
            type=click.Choice(PROTOCOLS),
            default="echo",
            show_default=True,
            help="echo: bytes echoed back; reqrep: railcar int32 frames (railcar serve reqrep); "
            "resp: Redis PING, or GET/SET with --ratio; kvbin: railcar's binary GET/SET "
            "(railcar serve kv --protocol kvbin); http: HTTP/1.1 GET; udp-echo: numbered datagrams "
            "echoed back (railcar serve echo --udp), one UDP socket per user, a datagram "
            "unanswered within --timeout counted as lost.",
        ),
        click.option(
            "--ratio",
            type=Ratio(),
            help="resp, kvbin: GETs to SETs, e.g. 1:1 (kvbin's default) or 9:1; every value a GET "
            "reads is checked against what this user wrote (else a wrong_value failure).",
        ),
        click.option(
            "--keys",
            type=click.IntRange(1, 10_000_000),
            help="resp, kvbin: keys each user reads and writes, its own (default 100).",
        ),
        click.option(
            "--value-size",
            type=click.IntRange(1),
            help="resp, kvbin: bytes of each value SET (default 16; kvbin at most 65535).",
        ),
        click.option(
            "--message",
            default="64",
            show_default=True,
            help="echo, udp-echo: message size in bytes, or the literal text to send "
            "(udp-echo: after an 8-byte sequence number).",
        ),
        click.option("--path", default="/", show_default=True, help="http: the path to GET."),
        click.option(
            "--pipeline",
            type=click.IntRange(1, 100_000),
            default=1,
            show_default=True,
            help="Requests each user sends together (reqrep: requests per frame).",
        ),
        click.option(
            "--interval",
            type=Duration(allow_zero=True),
            default="0",
            help="Closed loop: pause between a reply and the next request.",
        ),
        click.option(
            "--rate",
            type=report.FiniteFloatRange(0, min_open=True),
            help="Open loop: requests per second in total, on a fixed schedule; latency is timed "
            "from when each request was due (no coordinated omission).",
        ),
        click.option(
            "--procs",
            type=click.IntRange(1, 256),
            show_default="one per CPU, minus one when the server is on this machine",
            help="Worker processes the users are spread over. Each can keep a CPU busy: on the "
            "server's machine a worker on the server's CPU slows the server down (p99 against "
            "redis-server doubled with one worker per CPU); each also takes about 50 MiB of memory.",
        ),
        click.option(
            "--timeout",
            type=Duration(),
            default="10s",
            show_default=True,
            help="A request unanswered this long fails and its connection is replaced "
            "(udp-echo: the datagram is counted lost, the socket stays).",
        ),
        click.option(
            "--connect-timeout",
            type=Duration(),
            default="5s",
            show_default=True,
            help="A connect unanswered this long fails (and is retried while the load runs).",
        ),
        click.option("--quiet", is_flag=True, help="No live progress line."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _plan(
    host: str,
    port: int,
    protocol: str,
    message: str,
    path: str,
    pipeline: int,
    interval: float,
    rate: float | None,
    timeout: float,
    connect_timeout: float,
    users: int,
    duration: float,
    ratio: tuple[int, int] | None = None,
    keys: int | None = None,
    value_size: int | None = None,
) -> Plan:
    if rate and interval:
        raise click.UsageError(
            "--interval paces the closed loop; --rate sets the open loop's schedule: pick one"
        )
    key_space = protocol == "kvbin" or (protocol == "resp" and ratio is not None)
    if not key_space and (ratio, keys, value_size) != (None, None, None):
        raise click.UsageError(
            f"--ratio, --keys and --value-size need --protocol {' or '.join(KEY_SPACE_PROTOCOLS)} "
            "(resp with --ratio)"
        )
    workload = Workload(
        protocol,
        _message(message),
        host=host,
        path=path,
        ratio=ratio,
        keys=keys or 100,
        value_size=value_size or 16,
        run=os.urandom(4).hex().encode(),
    )
    return Plan(
        host,
        port,
        workload,
        users=users,
        duration=duration,
        pipeline=pipeline,
        interval=interval,
        rate=rate or 0.0,
        timeout=timeout,
        connect_timeout=connect_timeout,
        grace=min(timeout, 2.0),
    )


def _check(plan: Plan) -> None:
    """Make sure the target answers before loading it; raises TargetUnreachable."""
    if plan.workload.datagrams:
        check_datagram_target(plan.host, plan.port, plan.connect_timeout)
    else:
        check_target(plan.host, plan.port, plan.connect_timeout)


class _LiveLine:
    """A progress line on stderr, redrawn at most four times a second (only on a terminal)."""

    def __init__(self, enabled: bool, total: float) -> None:
        from rich.console import Console  # noqa: PLC0415 - only needed for interactive runs

        self.console = Console(stderr=True)
        self.enabled = enabled and self.console.is_terminal
        self.total = total
        self.status: Any = None

    def __enter__(self) -> _LiveLine:
        if self.enabled:
            self.status = self.console.status("connecting…", refresh_per_second=4)
            self.status.start()
        return self

    def __call__(self, p: runner.Progress) -> None:
        if self.status is not None:
            self.status.update(
                f"{p.elapsed:5.1f}/{self.total:g} s  sent {p.sent:,}  received {p.received:,}  "
                f"failures {p.failures:,}  {p.rate:,.0f} req/s  p99 {p.p99_us:,.0f} µs"
            )

    def __exit__(self, *_: object) -> None:
        if self.status is not None:
            self.status.stop()


EXIT_INTERRUPTED = 130

_EXIT_STATUS = f"""Exit status:

\b
  0    the run completed within --max-failures
  2    bad input or the server cannot be reached (nothing is run), or --out/--plot
       could not be written after the run (the report is printed all the same)
  {EXIT_FAILED}    the run completed over --max-failures, or no request was answered
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C); the partial report is printed
"""


_STRESS_EXIT_STATUS = f"""Exit status:

\b
  0    every step completed within --max-failures
  2    bad input or the server cannot be reached (nothing is run), or a step could
       not run (the table of the steps before it is printed)
  {EXIT_FAILED}    a step completed over --max-failures, or answered no request
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C); the steps measured so far are printed
"""


def max_failures_option(each: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--max-failures``: the failure budget of ``each`` (a load run, a stress step)."""
    return click.option(
        "--max-failures",
        type=FailureBudgetType(),
        default="0",
        show_default=True,
        help=f"Failed requests plus failed connects {each} may have and still pass (exit status 0): "
        "a count, or a share of the attempts such as 0.5%.",
    )


@click.command("load", epilog=_EXIT_STATUS)
@load_options
@click.option("--users", type=click.IntRange(1, 100_000), default=50, show_default=True, help="Connections.")
@click.option("--duration", type=Duration(), default="10s", show_default=True, help="How long to load.")
@max_failures_option("the run")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the text report.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=writable_file,
    help="Also write the JSON here.",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=writable_file,
    help="Write a PNG of the run here (needs matplotlib).",
)
def load_command(
    users: int,
    duration: float,
    max_failures: FailureBudget,
    as_json: bool,
    out: Path | None,
    plot: Path | None,
    procs: int | None,
    quiet: bool,
    **settings: Any,
) -> None:
    """Load a TCP server with many connections and report throughput and latency percentiles."""
    plan = _plan(users=users, duration=duration, **settings)
    if plot is not None:
        check_plot_available()  # before the load, not after it
    _check(plan)
    with _LiveLine(not quiet and not as_json, duration) as live:
        result = runner.run(plan, procs or default_procs(plan.host), live)
    doc = report.document([entry(result, plan.workload.protocol)], duration)
    unwritten = _write_files(doc, result, out, plot)
    if as_json:
        report.print_json(doc)
    else:
        click.echo(text(result))
    if unwritten:
        # after the report, which is worth having even when a file could not be written
        raise RailcarError("; ".join(unwritten) + " (the report is on stdout)")
    if result.interrupted:
        sys.exit(EXIT_INTERRUPTED)
    failed = max_failures.verdict(result)
    if failed is not None:
        click.echo(f"railcar: load failed: {failed}", err=True)
        sys.exit(EXIT_FAILED)


def _write_files(
    doc: dict[str, Any], result: runner.LoadResult, out: Path | None, plot: Path | None
) -> list[str]:
    """Write the JSON and the PNG asked for; return why each one that could not be written was not."""
    unwritten = []
    if out is not None:
        try:
            out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        except OSError as exc:
            unwritten.append(f"cannot write {out}: {exc.strerror or exc}")
    if plot is not None:
        try:
            write_png(result, plot)
        except RailcarError as exc:
            unwritten.append(str(exc))
    return unwritten


def _steps(value: str) -> list[int]:
    try:
        steps = [int(step) for step in value.split(",")]
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a comma-separated list of connection counts", param_hint="--steps"
        ) from None
    if not steps or min(steps) < 1:
        raise click.BadParameter("connection counts must be at least 1", param_hint="--steps")
    return steps


class _PeakRss:
    """Samples a process's resident memory at every progress tick and keeps the peak."""

    def __init__(self, pid: int | None, live: _LiveLine) -> None:
        self.pid = pid
        self.live = live
        self.peak = 0

    def __call__(self, progress: runner.Progress) -> None:
        if self.pid is not None:
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except OSError:
                self.pid = None
        self.live(progress)


@click.command("stress", epilog=_STRESS_EXIT_STATUS)
@load_options
@click.option(
    "--steps",
    default="1000,2000,4000,8000",
    show_default=True,
    help="Connection counts to step through, each a fresh run.",
)
@click.option("--step-duration", type=Duration(), default="5s", show_default=True, help="Length of a step.")
@click.option("--server-pid", type=int, help="Also report this server process's peak RSS at each step.")
@max_failures_option("each step")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
def stress_command(
    steps: str,
    step_duration: float,
    server_pid: int | None,
    max_failures: FailureBudget,
    as_json: bool,
    procs: int | None,
    quiet: bool,
    **settings: Any,
) -> None:
    """Step a server through growing connection counts; report throughput, p99, errors and memory per step.

    Each step is judged as a ``railcar load`` run: it passes within --max-failures and
    only if it answered a request. Ctrl-C ends the run with the steps finished so far
    (and the one under way), exit status 130.
    """
    counts = _steps(steps)
    if server_pid is not None and not Path(f"/proc/{server_pid}").exists():
        raise click.BadParameter(f"no process with pid {server_pid}", param_hint="--server-pid")
    plans = [_plan(users=users, duration=step_duration, **settings) for users in counts]
    procs = procs or default_procs(plans[0].host)
    runner.ensure_file_limit(max(plans, key=lambda plan: plan.users), procs)
    _check(plans[0])
    results: list[dict[str, Any]] = []
    rows: list[list[str]] = []
    over_budget: list[str] = []
    failed: RailcarError | None = None
    interrupted = False
    for plan in plans:
        with _LiveLine(not quiet and not as_json, step_duration) as live:
            sampler = _PeakRss(server_pid, live)
            try:
                result = runner.run(plan, procs, sampler)
            except KeyboardInterrupt:
                if not results:
                    raise
                interrupted = True  # before this step measured anything: report the steps finished
                break
            except RailcarError as exc:
                if not results:
                    raise
                # A later step failed (the server died, say): report the steps measured so far.
                failed = RailcarError(f"step users={plan.users}: {exc}")
                break
        item = entry(result, f"users={plan.users}")
        item["server_rss_bytes"] = sampler.peak or None
        results.append(item)
        rows.append(_row(result, sampler.peak))
        if result.interrupted:
            interrupted = True
            break
        verdict = max_failures.verdict(result)
        if verdict is not None:
            over_budget.append(f"step users={plan.users}: {verdict}")
    if as_json:
        report.print_json(report.document(results, step_duration))
    else:
        click.echo(
            report.table(
                [
                    "users",
                    "connected",
                    "req/s",
                    "p50 µs",
                    "p99 µs",
                    "failed requests",
                    "connect errors",
                    "server RSS MiB",
                    "generator RSS MiB",
                ],
                rows,
            )
        )
    if failed is not None:
        raise failed  # after the table: main() prints it as every error, one line, exit 2
    if interrupted:
        sys.exit(EXIT_INTERRUPTED)
    if over_budget:
        click.echo(f"railcar: stress failed: {'; '.join(over_budget)}", err=True)
        sys.exit(EXIT_FAILED)


def _row(result: runner.LoadResult, server_rss: int) -> list[str]:
    """One step of ``railcar stress`` as a row of its table."""
    latency = result.latency_us()
    rate = result.throughput
    return [
        f"{result.plan.users:,}",
        f"{result.connected:,}",
        "n/a" if rate is None else f"{rate:,.0f}",
        _us(latency["p50"]),
        _us(latency["p99"]),
        f"{result.failures:,}",
        f"{result.failure_kinds['connect']:,}",
        f"{server_rss / 2**20:,.1f}" if server_rss else "-",
        f"{result.generator_rss / 2**20:,.0f}",
    ]


def _us(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"
