"""The ``railcar`` command line: serve, bench."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import NoReturn, cast

import click

from railcar import __version__
from railcar.engine import ENGINES, create_server, default_engine
from railcar.engine.api import Server
from railcar.engine.listen import describe
from railcar.errors import RailcarError
from railcar.limits import raise_open_file_limit
from railcar.report import FiniteFloatRange

EXIT_USAGE = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="railcar")
def cli() -> None:
    """railcar: fast TCP services and clients that move messages in batches."""


@cli.group()
def serve() -> None:
    """Run a railcar service until SIGINT or SIGTERM."""


def listen_options(default_port: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """The options every ``railcar serve`` command takes: engine, address and stop deadline."""

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
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
                    "--unix", type=click.Path(dir_okay=False), help="Listen on this Unix socket instead."
                ),
                click.option(
                    "--deadline",
                    type=FiniteFloatRange(0),
                    default=5.0,
                    show_default=True,
                    help="Seconds a graceful stop waits for connections to flush.",
                ),
            ]
        ):
            command = option(command)
        return command

    return decorate


def run_until_signalled(server: Server, deadline: float) -> None:
    """Start, print the bound address as the first line, serve until SIGINT/SIGTERM; raises BindError."""
    raise_open_file_limit()
    server.start()

    def announce() -> None:
        click.echo(f"listening on {describe(server.address)}")
        sys.stdout.flush()

    server.serve_forever(deadline, ready=announce)


@serve.command("echo")
@listen_options(default_port=7000)
def serve_echo(engine: str, host: str, port: int, unix: str | None, deadline: float) -> None:
    """Echo every byte back to its sender."""
    from railcar.apps.echo import EchoHandler  # noqa: PLC0415 - keep CLI start-up light

    run_until_signalled(create_server(EchoHandler(), engine, host=host, port=port, unix=unix), deadline)


@serve.command("reqrep")
@click.option(
    "--codec",
    type=click.Choice(["int32", "struct276", "jsonl", "msgpack"]),
    default="int32",
    show_default=True,
    help="Wire encoding of requests and replies.",
)
@click.option(
    "--mode",
    type=click.Choice(["item", "batch", "array"]),
    default="item",
    show_default=True,
    help="Call the service per request, per batch, or per numpy array (fixed-size codecs).",
)
@click.option(
    "--max-frame",
    type=click.IntRange(64),
    default=64 * 1024 * 1024,
    show_default=True,
    help="Largest frame accepted, in bytes; a larger request frame fails its requests, the connection stays.",
)
@listen_options(default_port=7001)
def serve_reqrep(
    codec: str,
    mode: str,
    max_frame: int,
    engine: str,
    host: str,
    port: int,
    unix: str | None,
    deadline: float,
) -> None:
    """Answer batched requests: int32 numbers incremented, struct276 records with flags+1, others echoed."""
    from railcar.apps.increment import increment_service  # noqa: PLC0415 - keep CLI start-up light
    from railcar.reqrep import Mode, create_reqrep_server  # noqa: PLC0415

    chosen = cast(Mode, mode)
    server = create_reqrep_server(
        increment_service(codec, chosen),
        codec,
        mode=chosen,
        engine=engine,
        max_frame=max_frame,
        host=host,
        port=port,
        unix=unix,
    )
    run_until_signalled(server, deadline)


@cli.group()
def bench() -> None:
    """Measure railcar against its peers, side by side in one run."""


def _register_commands() -> None:
    from railcar.bench.echo import bench_echo, bench_idle  # noqa: PLC0415
    from railcar.bench.load import bench_load  # noqa: PLC0415
    from railcar.bench.reqrep import bench_reqrep  # noqa: PLC0415
    from railcar.load.command import load_command, stress_command  # noqa: PLC0415

    bench.add_command(bench_echo)
    bench.add_command(bench_idle)
    bench.add_command(bench_reqrep)
    bench.add_command(bench_load)
    cli.add_command(load_command)
    cli.add_command(stress_command)


_register_commands()


def main(argv: list[str] | None = None) -> NoReturn:
    """Run the CLI; usage and start-up errors print one line and exit with status 2."""
    logging.basicConfig(level=logging.WARNING, format="railcar: %(levelname)s %(message)s")
    try:
        cli.main(args=argv, prog_name="railcar", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        click.echo(f"railcar: error: {exc.format_message()}", err=True)
        sys.exit(EXIT_USAGE)
    except (RailcarError, ValueError) as exc:
        click.echo(f"railcar: error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except click.exceptions.Abort:
        click.echo("railcar: interrupted", err=True)
        sys.exit(130)
    sys.exit(0)
