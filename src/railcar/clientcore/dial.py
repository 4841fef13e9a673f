"""Dials: the small functions a client calls to open each connection, so tests and users can swap them."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

#: Opens one connection for a protocol: what a client calls again on every reconnection.
Dial = Callable[[Callable[[], asyncio.Protocol]], Awaitable[asyncio.BaseTransport]]


def tcp_dial(host: str, port: int, nodelay: bool = True) -> Dial:
    """Return a Dial for a TCP server (TCP_NODELAY on unless ``nodelay`` is False); it raises OSError."""

    async def dial(protocol: Callable[[], asyncio.Protocol]) -> asyncio.BaseTransport:
        transport, _ = await asyncio.get_running_loop().create_connection(protocol, host, port)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(nodelay))
        return transport

    return dial


def unix_dial(path: str) -> Dial:
    """Return a Dial for a server on the Unix socket ``path``; it raises OSError."""

    async def dial(protocol: Callable[[], asyncio.Protocol]) -> asyncio.BaseTransport:
        transport, _ = await asyncio.get_running_loop().create_unix_connection(protocol, path)
        return transport

    return dial
