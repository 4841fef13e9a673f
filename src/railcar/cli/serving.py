"""The options every ``railcar serve`` app takes (engine, address, deadline, workers) and how they run it."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from railcar.engine import ENGINES, default_engine
from railcar.engine.api import Address, DatagramHandler, DatagramOptions, Handler, Server, ServerOptions
from railcar.engine.listen import describe
from railcar.limits import raise_open_file_limit
from railcar.report import FiniteFloatRange
from railcar.workers import serve
from railcar.workers.balance import BALANCES
from railcar.workers.settings import ARCHITECTURES, check_settings

Command = Callable[..., None]


def serving_options(default_port: int) -> Callable[[Command], Command]:
    """Add the engine, address, deadline and worker options to a ``railcar serve`` command."""

    def decorate(command: Command) -> Command:
        for option in reversed(
            [
                click.option(
                    "--engine",
                    type=click.Choice(ENGINES),
                    default=default_engine,
                    show_default="uvloop where installed, else asyncio",
                    help="Event engine that runs the connections.",
                ),
                click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on."),
                click.option(
                    "--port",
                    type=click.IntRange(0, 65535),
                    default=default_port,
                    show_default=True,
                    help="TCP port; 0 picks a free one.",
                ),
                click.option(
                    "--unix",
                    type=click.Path(dir_okay=False),
                    help="Listen on this Unix socket instead of --host/--port.",
                ),
                click.option(
                    "--deadline",
                    type=FiniteFloatRange(0),
                    default=5.0,
                    show_default=True,
                    help="Seconds a graceful stop waits for connections to flush.",
                ),
                click.option(
                    "--workers",
                    type=click.IntRange(1, 1024),
                    default=1,
                    show_default=True,
                    help="Worker processes; 1 serves in this process.",
                ),
                click.option(
                    "--architecture",
                    type=click.Choice(ARCHITECTURES),
                    default="sharding",
                    show_default=True,
                    help="With --workers 2 or more: sharding, every worker listens (SO_REUSEPORT); "
                    "reactor, one acceptor passes connections to the workers.",
                ),
                click.option(
                    "--balance",
                    type=click.Choice(BALANCES),
                    help="With --architecture reactor: how the reactor picks a worker per connection "
                    "(under sharding the kernel does).  [default: round-robin]",
                ),
                click.option(
                    "--cpu-affinity/--no-cpu-affinity",
                    default=True,
                    show_default=True,
                    help="Pin worker i to CPU i mod the CPU count (with --workers 2 or more).",
                ),
            ]
        ):
            command = option(command)
        return command

    return decorate


def serve_app(
    handler_factory: Callable[[], Handler],
    settings: dict[str, Any],
    started: Callable[[Server], None] | None = None,
) -> None:
    """Serve the app until SIGINT/SIGTERM, printing the bound address first; raises click.UsageError.

    ``settings`` are the values of the options ``serving_options`` added; ``started`` is
    ``railcar.serve``'s.  Also raises BindError, WorkerStartError and WorkersFailed.
    """
    _check_given_options(settings)
    listen = {"host": settings["host"], "port": settings["port"], "unix": settings["unix"]}
    try:
        check_settings(
            settings["workers"], settings["architecture"], settings["balance"], ServerOptions(**listen)
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    raise_open_file_limit()
    serve(
        handler_factory,
        workers=settings["workers"],
        architecture=settings["architecture"],
        balance=settings["balance"],
        cpu_affinity=settings["cpu_affinity"],
        engine=settings["engine"],
        deadline=settings["deadline"],
        ready=_announce,
        started=started,
        **listen,
    )


def serve_datagram_app(
    handler_factory: Callable[[], DatagramHandler], settings: dict[str, Any], **options: Any
) -> None:
    """Serve UDP datagrams until SIGINT/SIGTERM, printing the bound address first; raises click.UsageError.

    ``options`` are DatagramOptions fields besides the address.  Under ``--workers`` each
    worker binds the port with SO_REUSEPORT (sharding; the reactor architecture has no
    accept to balance and is refused).  Also raises BindError, EngineUnavailable (the
    threads engine has no datagrams), WorkerStartError and WorkersFailed.
    """
    _check_given_options(settings)
    if settings["unix"] is not None:
        raise click.UsageError("--udp serves on --host/--port, not on a Unix socket")
    address = {"host": settings["host"], "port": settings["port"]}
    try:
        check_settings(
            settings["workers"],
            settings["architecture"],
            settings["balance"],
            DatagramOptions(**address, **options),
        )
    except ValueError as exc:
        raise click.UsageError(f"--udp: {exc}") from exc
    serve(
        handler_factory,
        workers=settings["workers"],
        architecture=settings["architecture"],
        cpu_affinity=settings["cpu_affinity"],
        engine=settings["engine"],
        deadline=settings["deadline"],
        ready=_announce,
        datagrams=True,
        **address,
        **options,
    )


def _check_given_options(settings: dict[str, Any]) -> None:
    """Refuse given options that others would make do nothing; raises click.UsageError.

    Only options the user gave count: a default never conflicts (``--balance``'s is the
    reactor's round-robin, applied only under the reactor, so it never trips the sharding check).
    """
    ctx = click.get_current_context()

    def given(name: str) -> bool:
        return ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)

    unix = settings["unix"]
    if unix == "":
        raise click.UsageError("--unix needs a socket path, not an empty string")
    if unix is not None and (given("host") or given("port")):
        raise click.UsageError("--unix listens on a Unix socket: drop --host and --port")
    # One worker serves in this process, as a sharding of one would: only the reactor differs.
    if settings["workers"] == 1 and (settings["architecture"] == "reactor" or given("balance")):
        raise click.UsageError(
            "--architecture reactor and --balance need --workers 2 or more "
            "(one worker serves in this process)"
        )
    if given("balance") and settings["architecture"] != "reactor":
        raise click.UsageError(
            "--balance needs --architecture reactor: under sharding the kernel balances connections"
        )


def _announce(address: Address) -> None:
    click.echo(f"listening on {describe(address)}")
    sys.stdout.flush()
