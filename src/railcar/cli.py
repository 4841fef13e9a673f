"""The ``railcar`` command line: serve, bench."""

from __future__ import annotations

import logging
import sys
from typing import NoReturn

import click

from railcar import __version__
from railcar.engine import ENGINES, create_server, default_engine
from railcar.engine.listen import describe
from railcar.errors import RailcarError
from railcar.limits import raise_open_file_limit

EXIT_USAGE = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="railcar")
def cli() -> None:
    """railcar: fast TCP services and clients that move messages in batches."""


@cli.group()
def serve() -> None:
    """Run a railcar service until SIGINT or SIGTERM."""


@serve.command("echo")
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default=default_engine,
    show_default="uvloop where installed, else asyncio",
    help="Event engine that runs the connections.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=7000,
    show_default=True,
    help="TCP port; 0 picks a free one.",
)
@click.option("--unix", type=click.Path(dir_okay=False), help="Listen on this Unix socket instead.")
@click.option(
    "--deadline",
    type=click.FloatRange(0),
    default=5.0,
    show_default=True,
    help="Seconds a graceful stop waits for connections to flush.",
)
def serve_echo(engine: str, host: str, port: int, unix: str | None, deadline: float) -> None:
    """Echo every byte back to its sender."""
    from railcar.apps.echo import EchoHandler  # noqa: PLC0415 - keep CLI start-up light

    raise_open_file_limit()
    server = create_server(EchoHandler(), engine, host=host, port=port, unix=unix)
    server.start()
    click.echo(f"listening on {describe(server.address)}")
    sys.stdout.flush()
    server.serve_forever(deadline)


@cli.group()
def bench() -> None:
    """Measure railcar against its peers, side by side in one run."""


def _register_bench_commands() -> None:
    from railcar.bench.echo import bench_echo, bench_idle  # noqa: PLC0415

    bench.add_command(bench_echo)
    bench.add_command(bench_idle)


_register_bench_commands()


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
