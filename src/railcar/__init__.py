"""railcar: fast TCP services and clients that move messages in batches.

The names below are imported on first use: ``railcar`` starts the command line, and
importing the engines first left 45 ms in which a Ctrl-C printed a traceback.
"""

from __future__ import annotations

import logging
from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from railcar.engine import (
        DATAGRAM_ENGINES,
        ENGINES,
        create_datagram_server,
        create_server,
        default_engine,
    )
    from railcar.engine.api import (
        Conn,
        DatagramEndpoint,
        DatagramHandler,
        DatagramOptions,
        DatagramServer,
        Handler,
        Server,
        ServerOptions,
    )
    from railcar.errors import (
        BindError,
        ConnectionClosed,
        EngineUnavailable,
        InboundOverflow,
        RailcarError,
        WorkersFailed,
        WorkerStartError,
    )
    from railcar.workers import serve

__version__ = "0.1.0"

# The library logs and never prints: an application that wants the messages configures logging.
logging.getLogger("railcar").addHandler(logging.NullHandler())

_HOMES = {
    "ENGINES": "railcar.engine",
    "DATAGRAM_ENGINES": "railcar.engine",
    "create_server": "railcar.engine",
    "create_datagram_server": "railcar.engine",
    "default_engine": "railcar.engine",
    "Conn": "railcar.engine.api",
    "DatagramEndpoint": "railcar.engine.api",
    "DatagramHandler": "railcar.engine.api",
    "DatagramOptions": "railcar.engine.api",
    "DatagramServer": "railcar.engine.api",
    "Handler": "railcar.engine.api",
    "Server": "railcar.engine.api",
    "ServerOptions": "railcar.engine.api",
    "BindError": "railcar.errors",
    "ConnectionClosed": "railcar.errors",
    "EngineUnavailable": "railcar.errors",
    "InboundOverflow": "railcar.errors",
    "RailcarError": "railcar.errors",
    "WorkerStartError": "railcar.errors",
    "WorkersFailed": "railcar.errors",
    "serve": "railcar.workers",
}


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'railcar' has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value
    return value


__all__ = [
    "DATAGRAM_ENGINES",
    "ENGINES",
    "BindError",
    "Conn",
    "ConnectionClosed",
    "DatagramEndpoint",
    "DatagramHandler",
    "DatagramOptions",
    "DatagramServer",
    "EngineUnavailable",
    "Handler",
    "InboundOverflow",
    "RailcarError",
    "Server",
    "ServerOptions",
    "WorkerStartError",
    "WorkersFailed",
    "__version__",
    "create_datagram_server",
    "create_server",
    "default_engine",
    "serve",
]
