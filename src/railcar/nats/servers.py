"""The server pool: URLs given by the user and learnt from INFO connect_urls, tried in turn."""

from __future__ import annotations

import random
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

DEFAULT_PORT = 4222


@dataclass(slots=True)
class Server:
    """One server of the pool; ``implicit`` ones came from INFO, not from the user."""

    host: str
    port: int
    user: str = ""
    password: str = ""
    implicit: bool = False
    tls: bool = False  # a tls:// URL: the connection must be upgraded to TLS
    last_attempt: float = -1e9  # loop time of the last dial
    reconnects: int = 0  # reconnection attempts to it since it last took a connection

    @property
    def address(self) -> str:
        """``host:port`` (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_url(url: str, implicit: bool = False) -> Server:
    """Parse ``nats://`` or ``tls://[user:pass@]host[:port]`` (scheme optional); raises ValueError."""
    text = url.strip()
    if "://" not in text:
        text = "nats://" + text
    parts = urlsplit(text)
    if parts.scheme not in {"nats", "tls"}:
        raise ValueError(f"bad NATS URL {url!r}: scheme must be nats:// or tls:// (got {parts.scheme}://)")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ValueError(f"bad NATS URL {url!r}: the port is not a number in 0-65535") from None
    if not parts.hostname:
        raise ValueError(f"bad NATS URL {url!r}: no host")
    return Server(
        parts.hostname,
        port,
        unquote(parts.username or ""),
        unquote(parts.password or ""),
        implicit,
        parts.scheme == "tls",
    )


class ServerPool:
    """The servers to try, in order: the given ones (shuffled unless asked not to), then learnt ones."""

    def __init__(self, urls: list[str], randomize: bool = True) -> None:
        if not urls:
            raise ValueError("need at least one server URL")
        self.servers = [parse_url(url) for url in urls]
        if randomize:
            random.shuffle(self.servers)
        self.current: Server | None = None

    def learn(self, connect_urls: list[str]) -> int:
        """Add the servers an INFO advertises that the pool lacks; return how many were added."""
        known = {server.address for server in self.servers}
        added = 0
        for url in connect_urls:
            try:
                server = parse_url(url, implicit=True)
            except ValueError:
                continue
            if server.address not in known:
                # A learnt server sits at a random place, so a cluster's clients spread out.
                self.servers.insert(random.randint(0, len(self.servers)), server)
                known.add(server.address)
                added += 1
        return added

    def drop_exhausted(self, max_reconnects: int | None) -> None:
        """Forget the servers that failed ``max_reconnects`` attempts since they last took a connection."""
        if max_reconnects is not None:
            self.servers = [server for server in self.servers if server.reconnects < max_reconnects]

    def next_server(self) -> Server:
        """The server to try next: the one after the current, which goes to the back of the pool."""
        if self.current is not None and self.current in self.servers:
            self.servers.remove(self.current)
            self.servers.append(self.current)
        self.current = self.servers[0]
        return self.current
