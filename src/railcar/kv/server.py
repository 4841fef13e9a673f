"""The wire-independent server: the store, the password, the clients and their ids."""

from __future__ import annotations

import itertools
import time
from typing import Any

from railcar.kv import commands  # noqa: F401 - registers every command in the table
from railcar.kv.client import Client
from railcar.kv.store import Store

REDIS_VERSION = "7.0.15"  # the version whose behaviour railcar follows; clients check it


class KvServer:
    """Everything the commands share beyond one client: the store, config, stats."""

    def __init__(self, requirepass: str | None = None, store: Store | None = None) -> None:
        self.store = store if store is not None else Store()
        self.requirepass = requirepass.encode() if requirepass is not None else None
        self.started = time.time()
        self.clients: dict[int, Client] = {}
        self._ids = itertools.count(1)
        self.commands_processed = 0
        self.connections_received = 0
        self.config: dict[bytes, bytes] = {
            b"save": b"",
            b"appendonly": b"no",
            b"databases": str(len(self.store.dbs)).encode(),
            b"maxmemory": b"0",
            b"maxmemory-policy": b"noeviction",
            b"timeout": b"0",
            b"proto-max-bulk-len": b"536870912",
            b"requirepass": self.requirepass or b"",
        }

    def new_client(self, peer: Any = None) -> Client:
        """A session for a new connection."""
        client = Client(self, next(self._ids), peer)
        self.clients[client.id] = client
        self.connections_received += 1
        return client

    def forget(self, client: Client) -> None:
        """Drop a closed connection's session."""
        self.clients.pop(client.id, None)
