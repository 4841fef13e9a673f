"""One client's session: its database, protocol, authentication, transaction and WATCHes.

``Client.execute`` runs one request the way Redis's ``processCommand`` does: QUIT first,
then the command lookup, arity, authentication, and queueing inside MULTI, each with
Redis's error reply; a rejected command inside MULTI makes EXEC fail with EXECABORT.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from railcar.kv import replies
from railcar.kv.blocking import unblock
from railcar.kv.memory import OOM
from railcar.kv.table import DENYOOM, FAST, NOAUTH, NOMULTI, TABLE, WRITE, Command
from railcar.proto.resp import NULL_ARRAY, OK, QUEUED, Error

if TYPE_CHECKING:
    from railcar.kv.blocking import Blocked
    from railcar.kv.server import KvServer
    from railcar.kv.store import Database

log = logging.getLogger("railcar.kv")


class Client:
    """The state Redis keeps per connection, and the dispatcher of its commands."""

    __slots__ = (
        "authenticated",
        "blocked",
        "closing",
        "db",
        "id",
        "in_exec",
        "multi",
        "multi_failed",
        "name",
        "peer",
        "resp3",
        "rewrite",
        "server",
        "watch_dirty",
        "watching",
    )

    def __init__(self, server: KvServer, client_id: int, peer: object = None) -> None:
        self.server = server
        self.id = client_id
        self.peer = peer
        self.name: bytes | None = None
        self.db: Database = server.store.dbs[0]
        self.resp3 = False
        self.authenticated = server.requirepass is None
        self.multi: list[tuple[Command, list[bytes]]] | None = None
        self.multi_failed = False
        self.watching: set[tuple[int, bytes]] = set()
        self.watch_dirty = False
        self.closing = False  # QUIT: close once the reply is sent
        self.in_exec = False  # running EXEC's commands: blocking ones answer at once
        #: What a blocking command waits for (``kv/blocking.py``); the client runs nothing else meanwhile.
        self.blocked: Blocked | None = None
        #: Set by a command whose change replays differently from its own words (see kv/aof.py).
        self.rewrite: list[list[bytes]] | None = None

    def execute(self, args: list[bytes]) -> Any:
        """Run one request (a non-empty list of words) and return its reply."""
        fast = FAST.get(args[0])
        server = self.server
        plain = server.aof is None and not server.maxmemory  # nothing to record or to check
        if fast is not None and self.multi is None and self.authenticated and plain:
            fn, least, most = fast
            if least <= len(args) <= most:
                try:
                    return fn(self, args)
                except Exception:  # a bug in one command must not take the connection or server down
                    log.exception("command %s failed", args[0])
                    return Error("ERR internal error")
        return self._execute(args)

    def _execute(self, args: list[bytes]) -> Any:
        name = args[0].lower()
        if name == b"quit":  # Redis 7.0 answers QUIT before anything else, even inside MULTI
            self.closing = True
            return OK
        entry = TABLE.get(name)
        if entry is None:
            return self._reject(replies.unknown_command(args))
        if entry.subcommands is not None and len(args) >= 2:
            sub = entry.subcommands.get(args[1].lower())
            if sub is None:
                return self._reject(replies.unknown_subcommand(args))
            entry = sub
        if not entry.arity_ok(len(args)):
            return self._reject(replies.wrong_arity(entry.name), entry)
        if not self.authenticated and NOAUTH not in entry.flags:
            return self._reject(replies.NOAUTH, entry)
        if self.server.maxmemory and self._refused_for_memory(entry):
            return self._reject(OOM, entry)
        if self.multi is not None and NOMULTI not in entry.flags:
            self.multi.append((entry, args))
            return QUEUED
        return self._run(entry, args)

    def _run(self, entry: Command, args: list[bytes]) -> Any:
        server = self.server
        if server.aof is None or WRITE not in entry.flags:
            try:
                return entry.fn(self, args)
            except Exception:  # a bug in one command must not take the connection or the server down
                log.exception("command %s failed", entry.name)
                return Error(f"ERR internal error in '{entry.name}'")
        store = server.store
        before = store.dirty
        self.rewrite = None
        db = self.db.index  # a command runs in the database selected when it starts
        try:
            reply = entry.fn(self, args)
        except Exception:
            log.exception("command %s failed", entry.name)
            reply = Error(f"ERR internal error in '{entry.name}'")
        if store.dirty != before:
            server.propagate(db, self.rewrite if self.rewrite is not None else [args])
        return reply

    def _refused_for_memory(self, entry: Command) -> bool:
        """Redis's rule past maxmemory: refuse what may grow the data.

        Inside MULTI anything but EXEC and DISCARD is refused too (queueing takes memory),
        and EXEC itself if it queued a growing command.
        """
        server = self.server
        if server.store.used <= server.maxmemory:
            return False
        if DENYOOM in entry.flags:
            return True
        if self.multi is None:
            return False
        if entry.name == "exec":
            return any(DENYOOM in queued.flags for queued, _ in self.multi)
        return entry.name != "discard"

    def _reject(self, error: Error, entry: Command | None = None) -> Error:
        if entry is not None and entry.name == "exec":  # Redis aborts the transaction and says why
            self.discard()
            reason = error.text.removeprefix("ERR ")
            return Error(f"EXECABORT Transaction discarded because of: {reason}")
        if self.multi is not None:
            self.multi_failed = True
        return error

    # -- transactions -----------------------------------------------------------------------

    def begin(self) -> Any:
        """MULTI."""
        if self.multi is not None:
            return Error("ERR MULTI calls can not be nested")
        self.multi = []
        self.multi_failed = False
        return OK

    def exec(self) -> Any:
        """EXEC: run the queued commands, or refuse (EXECABORT) or abort (a WATCHed key changed)."""
        queued = self.multi
        if queued is None:
            return Error("ERR EXEC without MULTI")
        failed, dirty = self.multi_failed, self.watch_dirty
        self.discard()
        if failed:
            return replies.EXECABORT
        if dirty:
            return NULL_ARRAY
        aof = self.server.aof
        self.in_exec = True
        try:
            if aof is None:
                return [self._run(entry, args) for entry, args in queued]
            # The transaction's changes go to the file inside MULTI/EXEC, so that replaying a file
            # cut in the middle of them applies none.
            mark = aof.mark()
            results = [self._run(entry, args) for entry, args in queued]
            aof.wrap_transaction(mark)
            return results
        finally:
            self.in_exec = False

    def retry_blocked(self, ready: bytes) -> Any:
        """Run the command this client is blocked on once more, for key ``ready``: its reply, or None."""
        blocked = self.blocked
        assert blocked is not None
        server = self.server
        before = server.store.dirty
        self.rewrite = None
        try:
            reply = blocked.attempt(ready)
        except Exception:  # a bug in one command must not take the connection or the server down
            log.exception("blocked command failed")
            return Error("ERR internal error")
        if server.store.dirty != before and self.rewrite is not None:
            server.propagate(blocked.db, self.rewrite)
        return reply

    def discard(self) -> None:
        """Forget the transaction and every WATCH."""
        self.multi = None
        self.multi_failed = False
        self.unwatch()

    def watch(self, keys: list[bytes]) -> None:
        """Watch ``keys`` of the current database until EXEC, DISCARD or UNWATCH."""
        watchers = self.server.store.watchers
        index = self.db.index
        for key in keys:
            entry = (index, key)
            if entry not in self.watching:
                self.watching.add(entry)
                watchers.setdefault(entry, set()).add(self)

    def unwatch(self) -> None:
        """Stop watching every key."""
        watchers = self.server.store.watchers
        for entry in self.watching:
            clients = watchers.get(entry)
            if clients is not None:
                clients.discard(self)
                if not clients:
                    del watchers[entry]
        self.watching.clear()
        self.watch_dirty = False

    def close(self) -> None:
        """Release what the connection held (its WATCHes, its place among blocked clients)."""
        unblock(self)
        self.unwatch()
        self.server.forget(self)
