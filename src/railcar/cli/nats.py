"""``railcar nats``: publish, subscribe, request and reply from the command line, and the NATS bench.

Each command connects with the asyncio client (one connection, no reconnection: a
command that loses its server should say so, not wait), prints what it receives on
stdout and exits with status 2 and one line when it cannot connect, loses the connection
or is given bad input (the client's log WARNINGs, which only repeat that line, are held
back at the default ``--log-level``).
``sub`` and ``reply`` run until ``--count`` messages or Ctrl-C, which ends them quietly
with status 0 (it is how they are stopped).  ``serve`` (``cli/nats_serve.py``) and
``bench`` (``bench/nats_bench.py``) are imported only when used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from railcar.cli.commands import _LazyGroup
from railcar.errors import ProtocolError, RailcarError
from railcar.nats import Client, Headers, Msg, ServerError, connect
from railcar.report import FiniteFloatRange

DEFAULT_SERVER = "nats://127.0.0.1:4222"
#: Seconds a command waits for the server's handshake before it gives up.
CONNECT_TIMEOUT = 5.0

T = TypeVar("T")


def _servers(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> list[str]:
    """``--server`` given several times and/or as a comma list, as one list of URLs."""
    urls = [url.strip() for item in value for url in item.split(",") if url.strip()]
    if not urls:
        raise click.BadParameter("need at least one server URL")
    return urls


def _headers(_ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> Headers | None:
    """``--header K:V`` pairs as a header block, in the order given (a name may repeat)."""
    pairs = []
    for item in value:
        name, sep, text = item.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"{item!r} is not NAME:VALUE", param=param)
        pairs.append((name.strip(), text.strip()))
    return Headers(pairs) if pairs else None


server_option = click.option(
    "--server",
    "servers",
    multiple=True,
    default=(DEFAULT_SERVER,),
    show_default=True,
    callback=_servers,
    help="Server URL (repeatable, or a comma-separated list).",
)
count_option = click.option(
    "--count",
    type=click.IntRange(0),
    default=0,
    help="Stop after this many messages (0: until Ctrl-C).",
)


@contextlib.contextmanager
def _library_warnings_quiet() -> Iterator[None]:
    """Keep the client's WARNINGs off stderr meanwhile, unless ``--log-level`` was given.

    They say what the command's one error line says (a failed handshake logged twice,
    then the error): at the default verbosity the error line alone tells it.
    """
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx is not None else None
    if root is None or root.get_parameter_source("log_level") is not ParameterSource.DEFAULT:
        yield
        return
    logger = logging.getLogger("railcar.nats")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _warn(error: BaseException) -> None:
    """``error_cb`` of the one-shot commands: one line for what leaves the connection up.

    An error that ends the connection (garbage, a fatal -ERR) is the command's error line.
    """
    if isinstance(error, ProtocolError) or (isinstance(error, ServerError) and error.fatal):
        return
    click.echo(f"railcar: warning: {error}", err=True)


async def _connected(servers: list[str], **options: Any) -> Client:
    """A client of the first server that answers; raises click.ClickException naming why not."""
    options.setdefault("reconnect", False)
    try:
        with _library_warnings_quiet():
            return await connect(servers, name="railcar-cli", connect_timeout=CONNECT_TIMEOUT, **options)
    # Refused, unreachable or timed out (OSError, TimeoutError), a bad URL (ValueError), or a
    # handshake the server refused (AuthorizationError, ServerError) or garbled (ProtocolError).
    except (OSError, ValueError, RailcarError) as exc:
        raise click.ClickException(f"cannot connect to {', '.join(servers)}: {exc}") from None


def _run(body: Callable[[Client], Coroutine[Any, Any, T]], servers: list[str]) -> T:
    """Connect, run ``body`` on uvloop (asyncio without it), close; raises what ``body`` raises.

    The connection's end is the command's one error line, and asynchronous errors that
    leave it up are one warning line each (``_warn``), not the library's log.
    """

    async def main() -> T:
        async with await _connected(servers, error_cb=_warn) as nc:
            return await body(nc)

    with _library_warnings_quiet():
        return _on_loop(main())


def _on_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop (asyncio without it); raises what it raises."""
    try:
        import uvloop  # noqa: PLC0415 - optional
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _until_interrupted(body: Callable[[Client], Coroutine[Any, Any, None]], servers: list[str]) -> None:
    """Run a command that stops at Ctrl-C: that is its normal end, so it returns (exit 0) quietly."""
    with contextlib.suppress(KeyboardInterrupt):
        _run(body, servers)
    sys.stdout.flush()


def _check_still_connected(nc: Client) -> None:
    """After a subscription ended early: raises click.ClickException when the connection was lost."""
    if nc.closed:
        raise click.ClickException(f"connection lost: {nc.last_error}")


def format_msg(number: int, msg: Msg) -> str:
    """One received message as text: ``[#N] SUBJECT (reply R)``, its headers, then its payload."""
    lines = [f"[#{number}] {msg.subject}" + (f" (reply {msg.reply})" if msg.reply else "")]
    headers = msg.headers
    if headers is not None:
        if headers.status is not None:
            lines.append(f"  status {headers.status} {headers.description}".rstrip())
        lines.extend(f"  {name}: {value}" for name, value in headers.pairs)
    lines.append(msg.data.decode(errors="backslashreplace"))
    return "\n".join(lines)


@click.group(
    cls=_LazyGroup,
    lazy={"bench": "railcar.bench.nats_bench:bench_nats", "serve": "railcar.cli.nats_serve:serve"},
)
def nats() -> None:
    """Talk to a NATS server: publish, subscribe, request, reply, serve a service, measure the client."""


@nats.command("pub")
@click.argument("subject")
@click.argument("data")
@click.option("--count", type=click.IntRange(1), default=1, show_default=True, help="Messages to publish.")
@click.option(
    "--header", "headers", multiple=True, callback=_headers, help="A header NAME:VALUE (repeatable)."
)
@server_option
def pub(subject: str, data: str, count: int, headers: Headers | None, servers: list[str]) -> None:
    """Publish DATA to SUBJECT (COUNT times); returns once the server has them all."""
    payload = data.encode()

    async def body(nc: Client) -> None:
        for _ in range(count):
            await nc.publish(subject, payload, headers=headers)
        await nc.flush(CONNECT_TIMEOUT)

    _run(body, servers)
    click.echo(f"published {count} message{'s' if count != 1 else ''} to {subject}")


@nats.command("sub")
@click.argument("subject")
@click.option("--queue", default="", help="Join this queue group (each message goes to one member).")
@count_option
@server_option
def sub(subject: str, queue: str, count: int, servers: list[str]) -> None:
    """Print the messages published to SUBJECT (wildcards allowed) until COUNT or Ctrl-C."""

    async def body(nc: Client) -> None:
        subscription = await nc.subscribe(subject, queue=queue, max_msgs=count)
        await nc.flush(CONNECT_TIMEOUT)  # subscribed on the server before saying so
        click.echo(f"listening on {subject}" + (f" (queue {queue})" if queue else ""), err=True)
        number = 0
        async for msg in subscription:
            number += 1
            click.echo(format_msg(number, msg))
        if number < count or not count:
            _check_still_connected(nc)

    _until_interrupted(body, servers)


@nats.command("request")
@click.argument("subject")
@click.argument("data")
@click.option(
    "--timeout",
    type=FiniteFloatRange(0, min_open=True),
    default=2.0,
    show_default=True,
    help="Seconds to wait for the reply.",
)
@click.option(
    "--header", "headers", multiple=True, callback=_headers, help="A header NAME:VALUE (repeatable)."
)
@server_option
def request(subject: str, data: str, timeout: float, headers: Headers | None, servers: list[str]) -> None:
    """Send DATA as a request to SUBJECT and print the reply (exit 2 on no responders or no reply)."""
    payload = data.encode()

    async def body(nc: Client) -> Msg:
        return await nc.request(subject, payload, timeout=timeout, headers=headers)

    reply = _run(body, servers)
    click.echo(format_msg(1, reply))


@nats.command("reply")
@click.argument("subject")
@click.argument("data")
@click.option("--queue", default="", help="Queue group to answer in (default: SUBJECT's own).")
@count_option
@server_option
def reply(subject: str, data: str, queue: str, count: int, servers: list[str]) -> None:
    """Answer every request on SUBJECT with DATA, printing each request, until COUNT or Ctrl-C."""
    payload = data.encode()

    async def body(nc: Client) -> None:
        # A queue group, as nats' own CLI does, so several repliers share the requests.
        subscription = await nc.subscribe(subject, queue=queue or "railcar.reply", max_msgs=count)
        await nc.flush(CONNECT_TIMEOUT)
        click.echo(f"answering on {subject}", err=True)
        number = 0
        async for msg in subscription:
            number += 1
            click.echo(format_msg(number, msg))
            if msg.reply:
                await nc.publish(msg.reply, payload)
        if number < count or not count:
            _check_still_connected(nc)
        await nc.flush(CONNECT_TIMEOUT)  # the last answers reach the server before the exit

    _until_interrupted(body, servers)
