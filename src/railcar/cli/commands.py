"""The commands of the ``railcar`` command line: serve, bench, and (imported when used) load, stress, nats."""

from __future__ import annotations

import functools
import importlib
import logging
import sys
from collections.abc import Callable
from typing import Any, NoReturn, cast

import click

from railcar import __version__
from railcar.cli.serving import serve_app, serve_datagram_app, serving_options
from railcar.engine import ENGINES, unavailable
from railcar.engine.api import MAX_UDP6_PAYLOAD, MAX_UDP_PAYLOAD
from railcar.errors import RailcarError, WorkersFailed
from railcar.report import FiniteFloatRange

EXIT_USAGE = 2
EXIT_FAILED = 1  # served, then the workers kept dying


class _LazyGroup(click.Group):
    """A group whose commands named in ``lazy`` ("module:attribute") are imported only when used.

    Importing every command's modules took 0.2 s before main() could handle a Ctrl-C:
    one pressed meanwhile printed a KeyboardInterrupt traceback.
    """

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command name, imported or not."""
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command ``cmd_name``, importing its module on first use."""
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, _, attribute = self.lazy[cmd_name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=_LazyGroup,
    lazy={
        "load": "railcar.load.command:load_command",
        "stress": "railcar.load.command:stress_command",
        "nats": "railcar.cli.nats:nats",
    },
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="railcar")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="warning",
    show_default=True,
    help="Least severe message of the library's log to print on stderr.",
)
def cli(log_level: str) -> None:
    """railcar: fast TCP services and clients that move messages in batches."""
    # The one place logging is configured: the library only logs (to a NullHandler).
    logging.basicConfig(level=log_level.upper(), format="railcar: %(levelname)s %(name)s: %(message)s")


@cli.command("engines")
def engines() -> None:
    """List the engines, whether each runs here (and why not), and the io_uring features found."""
    from railcar.engine.uring_support import probe  # noqa: PLC0415 - keep CLI start-up light

    for name in ENGINES:
        reason = unavailable(name)
        click.echo(f"{name:<8} {'available' if reason is None else 'unavailable: ' + reason}")
    click.echo("io_uring features:")
    for feature, found in probe().features().items():
        click.echo(f"  {feature:<22} {'yes' if found else 'no'}")


@cli.group()
def serve() -> None:
    """Run a railcar service until SIGINT or SIGTERM."""


@serve.command("echo")
@click.option(
    "--udp",
    is_flag=True,
    help="Echo UDP datagrams on --host/--port instead of TCP bytes (engines uvloop, asyncio, epoll, "
    "uring; --workers shard the port).",
)
@click.option(
    "--max-datagram",
    type=click.IntRange(1, MAX_UDP6_PAYLOAD),
    default=MAX_UDP_PAYLOAD,
    show_default=True,
    help="--udp: largest datagram in bytes; larger ones are counted, logged and dropped.",
)
@serving_options(default_port=7000)
def serve_echo(udp: bool, max_datagram: int, **serving: Any) -> None:
    """Echo every byte (or, with --udp, every datagram) back to its sender."""
    from railcar.apps.echo import DatagramEchoHandler, EchoHandler  # noqa: PLC0415 - keep CLI start-up light

    if udp:
        serve_datagram_app(DatagramEchoHandler, serving, max_datagram=max_datagram)
        return
    if max_datagram != MAX_UDP_PAYLOAD:
        raise click.UsageError("--max-datagram applies only with --udp")
    serve_app(EchoHandler, serving)


def http_options(command: Callable[..., None]) -> Callable[..., None]:
    """The HTTP server's options: handed on as ``timeouts``, ``limits``, ``parser``.

    A parser that is not built here is a usage error.
    """
    for option in reversed(
        [
            click.option(
                "--header-timeout",
                type=FiniteFloatRange(0, min_open=True),
                default=10.0,
                show_default=True,
                help="Seconds a client has to send a request head (slowloris).",
            ),
            click.option(
                "--idle-timeout",
                type=FiniteFloatRange(0, min_open=True),
                default=5.0,
                show_default=True,
                help="Seconds a keep-alive connection may wait for its next request.",
            ),
            click.option(
                "--body-timeout",
                type=FiniteFloatRange(0, min_open=True),
                default=30.0,
                show_default=True,
                help="Seconds a client has to send a request body.",
            ),
            click.option(
                "--max-head",
                type=click.IntRange(1),
                default=16 * 1024,
                show_default=True,
                help="Largest request head in bytes (431 past it).",
            ),
            click.option(
                "--max-headers",
                type=click.IntRange(1),
                default=100,
                show_default=True,
                help="Most header lines in a request (431 past it).",
            ),
            click.option(
                "--max-target",
                type=click.IntRange(1),
                default=8 * 1024,
                show_default=True,
                help="Longest request target in bytes (414 past it).",
            ),
            click.option(
                "--max-body",
                type=click.IntRange(1),
                default=1024 * 1024,
                show_default=True,
                help="Largest request body in bytes (413 past it).",
            ),
            click.option(
                "--parser",
                type=click.Choice(["auto", "c", "httptools"]),
                default="auto",
                show_default=True,
                help="What drives llhttp: railcar's C binding (built at install; auto: where built) or "
                "httptools.",
            ),
        ]
    ):
        command = option(command)

    def collect(**kwargs: Any) -> None:
        from railcar.http.timeouts import Timeouts  # noqa: PLC0415 - keep CLI start-up light
        from railcar.proto.http1 import Limits, input_factory  # noqa: PLC0415

        timeouts = Timeouts(
            *(kwargs.pop(name) for name in ("header_timeout", "idle_timeout", "body_timeout"))
        )
        limits = Limits(*(kwargs.pop(name) for name in ("max_head", "max_headers", "max_target", "max_body")))
        try:
            input_factory(kwargs["parser"])
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--parser'") from None
        command(timeouts=timeouts, limits=limits, **kwargs)

    return functools.update_wrapper(collect, command)


@serve.command("http")
@http_options
@serving_options(default_port=8080)
def serve_http(timeouts: Any, limits: Any, parser: str, **serving: Any) -> None:
    """Serve HTTP/1.1: GET /plaintext (Hello, World!) and GET /json."""
    from railcar.apps.hello_http import hello_app  # noqa: PLC0415 - keep CLI start-up light
    from railcar.http.server import HttpHandler  # noqa: PLC0415

    serve_app(functools.partial(HttpHandler, hello_app, limits, timeouts, parser=parser), serving)


@serve.command("asgi")
@click.argument("app", metavar="MODULE:ATTRIBUTE")
@click.option(
    "--lifespan",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="Run the app's lifespan startup and shutdown (auto: if the app supports them).",
)
@click.option("--root-path", default="", help="ASGI root_path: the prefix the app is mounted under.")
@click.option(
    "--app-dir",
    type=click.Path(file_okay=False, exists=True),
    default=".",
    show_default=True,
    help="Directory to import MODULE from (put first on sys.path).",
)
@http_options
@serving_options(default_port=8000)
def serve_asgi(
    app: str,
    lifespan: str,
    root_path: str,
    app_dir: str,
    timeouts: Any,
    limits: Any,
    parser: str,
    **serving: Any,
) -> None:
    """Serve an ASGI 3 application (Starlette, FastAPI, ...) on the asyncio or uvloop engine."""
    from railcar.engine import server_class  # noqa: PLC0415 - keep CLI start-up light
    from railcar.http.asgi import asgi_handler, wait_for_startup  # noqa: PLC0415

    engine = serving["engine"]
    if not server_class(engine).has_loop:
        raise click.BadParameter(
            f"an ASGI app needs an engine with an event loop (asyncio, uvloop), not {engine!r}",
            param_hint="'--engine'",
        )
    factory = functools.partial(
        asgi_handler,
        _import_app(app, app_dir),  # imported once, before the workers fork
        lifespan=cast(Any, lifespan),
        root_path=root_path,
        limits=limits,
        timeouts=timeouts,
        parser=parser,
    )
    serve_app(factory, serving, started=wait_for_startup)


def _import_app(spec: str, app_dir: str) -> Any:
    """The object ``module:attribute`` names; raises click.BadParameter saying what is missing."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise click.BadParameter(f"{spec!r} is not MODULE:ATTRIBUTE", param_hint="'APP'")
    sys.path.insert(0, app_dir)
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise click.BadParameter(f"cannot import {module_name!r}: {error}", param_hint="'APP'") from None
    for name in attribute.split("."):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise click.BadParameter(f"{module_name!r} has no {attribute!r}", param_hint="'APP'") from None
    if not callable(target):
        kind = type(target).__name__
        raise click.BadParameter(f"{spec} is not callable ({kind}): not an ASGI app", param_hint="'APP'")
    return target


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
@click.option(
    "--frame-timeout",
    type=FiniteFloatRange(0),
    default=30.0,
    show_default=True,
    help="Seconds a frame has to arrive whole once its first byte has (slowloris); 0: no limit.",
)
@click.option(
    "--idle-timeout",
    type=FiniteFloatRange(0),
    default=0.0,
    show_default=True,
    help="Seconds a connection owed no reply may stay silent before it is closed; 0: no limit.",
)
@serving_options(default_port=7001)
def serve_reqrep(
    codec: str, mode: str, max_frame: int, frame_timeout: float, idle_timeout: float, **serving: Any
) -> None:
    """Answer batched requests: int32 numbers incremented, struct276 records with flags+1, others echoed."""
    from railcar.apps.increment import increment_service  # noqa: PLC0415 - keep CLI start-up light
    from railcar.reqrep import Mode, ReqRepHandler  # noqa: PLC0415

    chosen = cast(Mode, mode)
    factory = functools.partial(
        ReqRepHandler,
        increment_service(codec, chosen),
        codec,
        chosen,
        max_frame,
        frame_timeout=frame_timeout or None,
        idle_timeout=idle_timeout or None,
    )
    serve_app(factory, serving)


@serve.command("kv")
@click.option(
    "--protocol",
    type=click.Choice(["resp", "kvbin"]),
    default="resp",
    show_default=True,
    help="resp: Redis's RESP2/3 (redis-cli, redis-py, ...); kvbin: railcar's compact binary GET/SET.",
)
@click.option(
    "--requirepass",
    metavar="PASSWORD",
    help="Require AUTH with this password before other commands (Redis's option of the same name).",
)
@click.option(
    "--appendonly",
    metavar="PATH",
    type=click.Path(dir_okay=False),
    help="Append-only file: replayed at start, every change appended (Redis's format, for redis-check-aof).",
)
@click.option(
    "--appendfsync",
    type=click.Choice(["always", "everysec", "no"]),
    default="everysec",
    show_default=True,
    help="always: reply once changes are on disk; everysec: fsync once a second; no: when the kernel does.",
)
@click.option(
    "--maxmemory",
    metavar="BYTES",
    default="0",
    show_default=True,
    help="Refuse commands that grow the data past this size (Redis's notation: 100mb, 1gb); 0: no limit.",
)
@click.option(
    "--parser",
    type=click.Choice(["auto", "c", "hiredis", "python"]),
    default="auto",
    show_default=True,
    help="RESP request parser: railcar's C one (built at install), hiredis's, or the pure-Python one; "
    "auto: the first of these available.",
)
@click.option(
    "--executor",
    type=click.Choice(["auto", "c", "python"]),
    default="auto",
    show_default=True,
    help="What runs a pipeline's plain GET/SET/INCR/LPUSH/RPUSH/LPOP/RPOP: railcar's C executor (built at "
    "install) or the Python commands; auto: C where built.",
)
@serving_options(default_port=6379)
def serve_kv(
    protocol: str,
    requirepass: str | None,
    appendonly: str | None,
    appendfsync: str,
    maxmemory: str,
    parser: str,
    executor: str,
    **serving: Any,
) -> None:
    """A Redis-compatible key-value server (RESP2/3): strings, keys, expiry, lists, hashes, sets, MULTI.

    With --protocol kvbin it speaks railcar's compact binary GET/SET protocol instead, on the same store.
    """
    from railcar.apps.kv import KvHandler  # noqa: PLC0415 - keep CLI start-up light
    from railcar.apps.kvbin import KvbinHandler  # noqa: PLC0415
    from railcar.kv.aof import Fsync  # noqa: PLC0415
    from railcar.kv.memory import parse_memory  # noqa: PLC0415

    if serving["workers"] > 1:
        raise click.UsageError("kv keeps its keyspace in one process: --workers must be 1")
    try:
        limit = parse_memory(maxmemory)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="'--maxmemory'") from None
    factory: Callable[[], KvHandler | KvbinHandler]
    if protocol == "kvbin":
        if requirepass is not None:
            raise click.UsageError("--requirepass needs --protocol resp: kvbin has no AUTH")
        if parser != "auto" or executor != "auto":
            raise click.UsageError("--parser and --executor are RESP's: they need --protocol resp")
        factory = functools.partial(
            KvbinHandler, maxmemory=limit, appendonly=appendonly, appendfsync=cast(Fsync, appendfsync)
        )
    else:
        factory = functools.partial(
            KvHandler,
            maxmemory=limit,
            requirepass=requirepass,
            parser=parser,
            executor=executor,
            appendonly=appendonly,
            appendfsync=cast(Fsync, appendfsync),
        )
    serve_app(factory, serving)  # the handler's close() runs once the server has stopped


@cli.group(
    cls=_LazyGroup,
    lazy={
        "echo": "railcar.bench.echo:bench_echo",
        "idle": "railcar.bench.echo:bench_idle",
        "reqrep": "railcar.bench.reqrep:bench_reqrep",
        "load": "railcar.bench.load:bench_load",
        "kv": "railcar.bench.kv:bench_kv",
        "kvload": "railcar.bench.kvload:bench_kvload",
        "kvmem": "railcar.bench.kvmem:bench_kvmem",
        "http": "railcar.bench.http:bench_http",
        "workers": "railcar.bench.workers:bench_workers",
        "udp": "railcar.bench.udp:bench_udp",
    },
)
def bench() -> None:
    """Measure railcar against its peers, side by side in one run."""


def run(argv: list[str] | None = None) -> NoReturn:
    """Run the CLI; usage and start-up errors print one line and exit with status 2."""
    try:
        cli.main(args=argv, prog_name="railcar", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        click.echo(f"railcar: error: {exc.format_message()}", err=True)
        sys.exit(EXIT_USAGE)
    except WorkersFailed as exc:
        click.echo(f"railcar: error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    except (RailcarError, ValueError) as exc:
        click.echo(f"railcar: error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except click.exceptions.Abort:  # click's word for a Ctrl-C in a command
        raise KeyboardInterrupt from None  # railcar.cli.main reports every Ctrl-C the same way
    sys.exit(0)
