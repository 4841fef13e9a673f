"""The wire-independent server: the store, the password, the clients and their ids."""

from __future__ import annotations

import itertools
import time
from typing import Any

from railcar.kv import commands  # noqa: F401 - registers every command in the table
from railcar.kv.aof import AppendOnlyFile
from railcar.kv.client import Client
from railcar.kv.store import Store

REDIS_VERSION = "7.0.15"  # the version whose behaviour railcar follows; clients check it


class KvServer:
    """Everything the commands share beyond one client: the store, config, stats."""

    def __init__(
        self, requirepass: str | None = None, store: Store | None = None, maxmemory: int = 0
    ) -> None:
        self.store = store if store is not None else Store()
        #: Bytes of data past which growing commands are refused (kv/memory.py); 0: no limit.
        self.maxmemory = maxmemory
        self.requirepass = requirepass.encode() if requirepass is not None else None
        self.started = time.time()
        self.clients: dict[int, Client] = {}
        self._ids = itertools.count(1)
        self.commands_processed = 0
        self.aof: AppendOnlyFile | None = None
        self.connections_received = 0
        self.config: dict[bytes, bytes] = {
            b"save": b"",
            b"appendonly": b"no",
            b"databases": str(len(self.store.dbs)).encode(),
            b"maxmemory": str(maxmemory).encode(),
            b"maxmemory-policy": b"noeviction",
            b"timeout": b"0",
            b"proto-max-bulk-len": b"536870912",
            b"requirepass": self.requirepass or b"",
        }

    def open_aof(self, aof: AppendOnlyFile) -> None:
        """From now on, record every change in ``aof`` (after replaying it: ``aof.replay``)."""
        self.aof = aof
        self.store.expired_hook = self._expired
        self.config[b"appendonly"] = b"yes"

    def _expired(self, db: int, key: bytes) -> None:
        if self.aof is not None:
            self.aof.record(db, [b"DEL", key])

    def propagate(self, db: int, records: list[list[bytes]]) -> None:
        """Record the commands that made a change (none without an append-only file)."""
        if self.aof is not None:
            for args in records:
                self.aof.record(db, args)

    def flush_aof(self) -> None:
        """Write the changes recorded since the last flush (fsync per policy); raises AofError."""
        if self.aof is not None:
            self.aof.flush()

    def new_client(self, peer: Any = None) -> Client:
        """A session for a new connection."""
        client = Client(self, next(self._ids), peer)
        self.clients[client.id] = client
        self.connections_received += 1
        return client

    def forget(self, client: Client) -> None:
        """Drop a closed connection's session."""
        self.clients.pop(client.id, None)
