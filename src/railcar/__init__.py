"""railcar: fast TCP services and clients that move messages in batches."""

from __future__ import annotations

import logging

from railcar.engine import ENGINES, create_server, default_engine
from railcar.engine.api import Conn, Handler, Server, ServerOptions
from railcar.errors import (
    BindError,
    ConnectionClosed,
    EngineUnavailable,
    InboundOverflow,
    RailcarError,
)

__version__ = "0.1.0"

# The library logs and never prints: an application that wants the messages configures logging.
logging.getLogger("railcar").addHandler(logging.NullHandler())

__all__ = [
    "ENGINES",
    "BindError",
    "Conn",
    "ConnectionClosed",
    "EngineUnavailable",
    "Handler",
    "InboundOverflow",
    "RailcarError",
    "Server",
    "ServerOptions",
    "__version__",
    "create_server",
    "default_engine",
]
