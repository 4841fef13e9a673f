"""``railcar nats serve``: a railcar request–response service on a NATS subject, in a queue group.

Several processes serving one subject in one queue group share its requests (nats-server
gives each request to one member), and each answers ``$SRV.PING/INFO/STATS`` so NATS tools
list it.  Unlike the one-shot commands it reconnects when its server goes away (a service
should ride out a server restart) and exits with status 2 only once reconnection gives up.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import cast

import click

from railcar.cli.nats import CONNECT_TIMEOUT, _connected, _on_loop, server_option
from railcar.nats import Msg
from railcar.nats.service import QUEUE_GROUP, EndpointHandler, add_service

#: The reply header ``--pid-header`` sets: which process answered.
PID_HEADER = "Railcar-Pid"
VERSION = "1.0.0"


def _echo(msg: Msg) -> bytes:
    data: bytes = msg.data
    return data


def app_handler(app: str, codec: str, mode: str) -> EndpointHandler:
    """The endpoint handler of ``app`` (increment or echo); raises ValueError: array mode, variable codec."""
    if app == "echo":
        return _echo
    from railcar.apps.increment import increment_service  # noqa: PLC0415 - keep CLI start-up light
    from railcar.nats.batches import batch_handler  # noqa: PLC0415
    from railcar.reqrep import Mode  # noqa: PLC0415

    chosen = cast(Mode, mode)
    return batch_handler(increment_service(codec, chosen), codec, chosen)


@click.command("serve")
@click.argument("subject")
@click.option(
    "--queue",
    default=QUEUE_GROUP,
    show_default=True,
    help="Queue group: the processes in it share the requests, each answered by one.",
)
@click.option(
    "--app",
    type=click.Choice(["increment", "echo"]),
    default="increment",
    show_default=True,
    help="increment: `railcar serve reqrep`'s service, a batch per message; echo: the payload back.",
)
@click.option(
    "--codec",
    type=click.Choice(["int32", "struct276", "jsonl", "msgpack"]),
    default="int32",
    show_default=True,
    help="Wire encoding of the records in a message (increment).",
)
@click.option(
    "--mode",
    type=click.Choice(["item", "batch", "array"]),
    default="batch",
    show_default=True,
    help="Call the service per record, per batch, or per numpy array (fixed-size codecs).",
)
@click.option("--name", default="railcar", show_default=True, help="Service name for $SRV.PING/INFO/STATS.")
@click.option("--pid-header", is_flag=True, help=f"Put this process's pid in a {PID_HEADER} reply header.")
@server_option
def serve(
    subject: str, queue: str, app: str, codec: str, mode: str, name: str, pid_header: bool, servers: list[str]
) -> None:
    """Serve requests on SUBJECT until Ctrl-C or SIGTERM (status 0), or until the server is gone for good."""
    handler = app_handler(app, codec, mode)
    reply_headers = {PID_HEADER: str(os.getpid())} if pid_header else None

    async def main() -> None:
        closed = asyncio.Event()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with await _connected(servers, reconnect=True, closed_cb=closed.set) as nc:
            service = await add_service(
                nc,
                name,
                VERSION,
                description=f"railcar {app} ({codec}, {mode})",
                metadata={"pid": str(os.getpid())},
            )
            await service.add_endpoint(
                app, handler, subject=subject, queue_group=queue, reply_headers=reply_headers
            )
            await nc.flush(CONNECT_TIMEOUT)  # subscribed on the server before saying so
            click.echo(
                f"serving {subject} (queue {queue}) as {name} {service.id}, pid {os.getpid()}", err=True
            )
            await _first(stop, closed)
            if nc.closed:
                raise click.ClickException(f"connection lost: {nc.last_error}")
            await service.stop()

    _on_loop(main())


async def _first(*events: asyncio.Event) -> None:
    """Wait until one of ``events`` is set."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
