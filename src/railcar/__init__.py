"""railcar: fast TCP services and clients that move messages in batches."""

from __future__ import annotations

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
