"""Engines by name: each runs any Handler behind the same Conn and Server contract."""

from __future__ import annotations

import importlib
from typing import Any

from railcar.engine.api import (
    DatagramHandler,
    DatagramOptions,
    DatagramServer,
    Handler,
    Server,
    ServerOptions,
)
from railcar.errors import EngineUnavailable

ENGINES = ("uvloop", "asyncio", "epoll", "threads", "uring")

_MODULES = {
    "asyncio": ("railcar.engine.asyncio_", "AsyncioServer"),
    "uvloop": ("railcar.engine.asyncio_", "UvloopServer"),
    "epoll": ("railcar.engine.epoll", "EpollServer"),
    "threads": ("railcar.engine.threads", "ThreadsServer"),
    "uring": ("railcar.engine.uring", "UringServer"),
}


# Engines that serve datagrams; the threads engine does not (one thread per connection
# has nothing to offer a connectionless socket).
DATAGRAM_ENGINES = ("uvloop", "asyncio", "epoll", "uring")

_DATAGRAM_MODULES = {
    "asyncio": ("railcar.engine.asyncio_datagram", "AsyncioDatagramServer"),
    "uvloop": ("railcar.engine.asyncio_datagram", "UvloopDatagramServer"),
    "epoll": ("railcar.engine.epoll_datagram", "EpollDatagramServer"),
    "uring": ("railcar.engine.uring_datagram", "UringDatagramServer"),
}


def _uvloop_importable() -> bool:
    try:
        import uvloop  # noqa: F401, PLC0415 - only probing
    except ImportError:
        return False
    return True


def default_engine() -> str:
    """Return the fastest engine available here: uvloop where importable, else asyncio."""
    return "uvloop" if _uvloop_importable() else "asyncio"


def unavailable(engine: str) -> str | None:
    """Say in one line why a known ``engine`` cannot run here (None: it can); raises nothing."""
    if engine == "uvloop" and not _uvloop_importable():
        return "engine 'uvloop' needs the uvloop package: pip install uvloop"
    if engine == "epoll" and not hasattr(__import__("select"), "epoll"):
        return "engine 'epoll' needs Linux (select.epoll)"
    if engine == "uring":
        from railcar.engine.uring_support import missing  # noqa: PLC0415 - probes the kernel once, on demand

        reason = missing()
        if reason is not None:
            return f"engine 'uring' is unavailable here: {reason}"
    return None


def available_engines() -> tuple[str, ...]:
    """The engines of ENGINES that can run here, in ENGINES order; raises nothing."""
    return tuple(engine for engine in ENGINES if unavailable(engine) is None)


def available_datagram_engines() -> tuple[str, ...]:
    """The engines of DATAGRAM_ENGINES that can run here, in that order; raises nothing."""
    return tuple(engine for engine in DATAGRAM_ENGINES if unavailable(engine) is None)


def _check_available(engine: str) -> None:
    if engine not in _MODULES:
        raise EngineUnavailable(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    reason = unavailable(engine)
    if reason is not None:
        raise EngineUnavailable(reason)


def server_class(engine: str | None = None) -> type[Server]:
    """Return the Server class of ``engine`` (None: the default); raises EngineUnavailable."""
    engine = engine or default_engine()
    _check_available(engine)
    module_name, class_name = _MODULES[engine]
    module = importlib.import_module(module_name)
    cls: type[Server] = getattr(module, class_name)
    return cls


def create_server(handler: Handler, engine: str | None = None, **options: Any) -> Server:
    """Make an unstarted server for ``handler``; raises EngineUnavailable or ValueError (bad options)."""
    return server_class(engine)(handler, ServerOptions(**options))


def datagram_server_class(engine: str | None = None) -> type[DatagramServer]:
    """Return the DatagramServer class of ``engine`` (None: the default); raises EngineUnavailable."""
    engine = engine or default_engine()
    _check_available(engine)
    if engine not in _DATAGRAM_MODULES:
        raise EngineUnavailable(
            f"engine {engine!r} does not serve datagrams; choose one of {', '.join(DATAGRAM_ENGINES)}"
        )
    module_name, class_name = _DATAGRAM_MODULES[engine]
    cls: type[DatagramServer] = getattr(importlib.import_module(module_name), class_name)
    return cls


def create_datagram_server(
    handler: DatagramHandler, engine: str | None = None, **options: Any
) -> DatagramServer:
    """Make an unstarted UDP server for ``handler``; raises EngineUnavailable or ValueError (bad options)."""
    return datagram_server_class(engine)(handler, DatagramOptions(**options))
