"""Serve on every core: one process per worker, under a supervisor, by sharding or behind a reactor.

- ``sharding``: each worker binds its own listener on the same TCP port with
  SO_REUSEPORT and runs its own engine; the kernel spreads the connections.
- ``reactor``: the supervisor process accepts and passes each connection to a
  worker over an AF_UNIX SOCK_SEQPACKET socket (SCM_RIGHTS), choosing it by a
  ``balance`` policy (see ``railcar.workers.balance``); workers adopt them
  (``Server.adopt``) and report their live connection counts back.

Datagram handlers (``datagrams=True``) are served by sharding only: each worker
binds its own UDP socket on the port with SO_REUSEPORT and the kernel spreads the
datagrams by their 4-tuple hash; there is no accept for a reactor to balance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from railcar.engine.api import (
    Address,
    DatagramHandler,
    DatagramOptions,
    Handler,
    Server,
    ServerOptions,
)
from railcar.workers.settings import Restarts, check_settings, server_for

__all__ = ["Restarts", "serve"]


def serve(
    handler_factory: Callable[[], Handler | DatagramHandler],
    *,
    workers: int = 1,
    architecture: str = "sharding",
    balance: str | None = None,
    cpu_affinity: bool = True,
    engine: str | None = None,
    deadline: float = 5.0,
    ready: Callable[[Address], None] | None = None,
    started: Callable[[Server], None] | None = None,
    restarts: Restarts | None = None,
    datagrams: bool | None = None,
    **options: Any,
) -> None:
    """Serve handlers from ``handler_factory`` until SIGINT/SIGTERM, then stop within ``deadline`` s.

    ``workers=1`` serves in this process; more fork worker processes (so the factory
    need not pickle; it runs once in each worker), worker i pinned to CPU i mod the
    CPU count when ``cpu_affinity``.  ``datagrams`` serves UDP: the factory makes
    DatagramHandlers and ``options`` are DatagramOptions fields (None: True when the
    factory is a DatagramHandler class; under workers, sharding only).  Otherwise
    ``options`` are ServerOptions fields; ``started`` runs in each worker once its
    server listens (an app's start-up, such as an ASGI lifespan; what it raises fails
    that worker's start); ``ready`` gets the bound address once every worker has
    started.  A handler with a ``close()`` method has it called once its server has
    stopped.  Main thread only.  Raises ValueError (bad settings), TypeError (a handler
    of the other kind), EngineUnavailable, BindError, WorkerStartError, or WorkersFailed
    when the workers keep dying.
    """
    if datagrams is None:
        datagrams = isinstance(handler_factory, type) and issubclass(handler_factory, DatagramHandler)
    if datagrams and started is not None:
        raise ValueError("started runs with a stream server; a datagram handler has on_start")
    kind = DatagramOptions if datagrams else ServerOptions
    check_settings(workers, architecture, balance, kind(**options))
    if workers > 1:
        from railcar.workers.supervisor import Supervisor  # noqa: PLC0415 - the CLI starts faster without

        supervisor = Supervisor(
            handler_factory,
            workers=workers,
            architecture=architecture,
            balance=balance,
            engine=engine,
            cpu_affinity=cpu_affinity,
            deadline=deadline,
            restarts=restarts,
            started=started,
            datagrams=datagrams,
            **options,
        )
        supervisor.serve_forever(None if ready is None else lambda: ready(supervisor.address))
        return
    handler = handler_factory()
    try:
        server = server_for(handler, engine, kind(**options))
        server.start()
        if started is not None and isinstance(server, Server):
            try:
                started(server)
            except BaseException:
                server.stop(deadline)
                raise
        server.serve_forever(deadline, None if ready is None else lambda: ready(server.address))
    finally:
        close = getattr(handler, "close", None)
        if callable(close):
            close()
