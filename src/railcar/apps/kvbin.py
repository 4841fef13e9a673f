"""The key–value server's compact binary protocol (``proto/kvbin``) on the store RESP clients use.

Each read's requests run in order against database 0 of the store (``kv``) and their
replies are encoded into one buffer, written once.  Strings are read only through
``kv.store.string_bytes``, so how the store holds them is its own business.  A SET is
recorded in the append-only file as the RESP ``SET key value`` it is, in the same
format and with the same group commit as the RESP server (one write, and under
``always`` one fsync, per read, before its replies go out).  As in ``apps/kv``, once
a read's replies pass ``FLUSH_AT`` they are written early, and if the connection then
stops taking output the rest of the read's requests wait for ``on_writable``: a
pipeline of GETs of large values from a client that does not read holds the server to
the engine's output bound.  A lock serialises the store for the ``threads`` engine.
"""

from __future__ import annotations

import logging
import threading
from typing import Final

from railcar.engine.api import Conn, Handler
from railcar.kv.aof import FSYNC_POLICIES, AppendOnlyFile, Fsync, replay
from railcar.kv.memory import OOM as OOM_ERROR
from railcar.kv.server import KvServer
from railcar.kv.store import string_bytes
from railcar.proto.kvbin import (
    ERROR,
    GET,
    MAX_LENGTH,
    NOT_FOUND_REPLY,
    OK,
    OK_REPLY,
    OOM,
    REPLY_HEADER,
    TOO_LARGE,
    WRONG_TYPE,
    Request,
    RequestParser,
    encode_reply,
)

log = logging.getLogger("railcar.kv")

#: Replies are written early once a read's output reaches this many bytes.
FLUSH_AT: Final = 256 * 1024
WRONGTYPE_TEXT: Final = b"WRONGTYPE Operation against a key holding the wrong kind of value"
OOM_TEXT: Final = OOM_ERROR.text.encode()

_STATE = "kvbin"
_pack_header = REPLY_HEADER.pack


class _Session:
    __slots__ = ("backlog", "closing", "parser")

    def __init__(self) -> None:
        self.parser = RequestParser()
        self.backlog: list[Request] = []  # parsed requests waiting for the output to drain
        self.closing = False  # a malformed request was answered: nothing more is read


class KvbinHandler(Handler):
    """Serves kvbin clients on any engine; ``kv`` holds the store (shareable with a RESP handler's)."""

    def __init__(
        self,
        server: KvServer | None = None,
        appendonly: str | None = None,
        appendfsync: Fsync = "everysec",
        maxmemory: int = 0,
    ) -> None:
        """Raises ValueError for an unknown fsync policy, AofError for a damaged append-only file."""
        if appendfsync not in FSYNC_POLICIES:
            raise ValueError(f"appendfsync must be one of {', '.join(FSYNC_POLICIES)}, not {appendfsync!r}")
        self.kv = server if server is not None else KvServer(maxmemory=maxmemory)
        if appendonly is not None:
            report = replay(appendonly, self.kv)
            log.info("append-only file %s: %d commands replayed", appendonly, report.commands)
            self.kv.open_aof(AppendOnlyFile(appendonly, appendfsync, db=report.db))
        self.lock = threading.Lock()

    def close(self) -> None:
        """Close the append-only file (its last changes are written and fsynced first)."""
        with self.lock:
            if self.kv.aof is not None:
                self.kv.aof.close()
                self.kv.aof = None

    def on_open(self, conn: Conn) -> None:
        """Give the connection its parser."""
        conn.context[_STATE] = _Session()
        with self.lock:  # the threads engine opens connections from many threads
            self.kv.connections_received += 1

    def on_data(self, conn: Conn, data: memoryview) -> None:
        """Run the requests ``data`` completes and write their replies; a malformed one ends it."""
        session: _Session = conn.context[_STATE]
        if session.closing:
            return
        requests = session.parser.feed(data)
        if session.backlog:
            session.backlog += requests  # answered in order, after those already waiting
            return
        self._serve(conn, session, requests)

    def on_writable(self, conn: Conn) -> None:
        """Output drained: run the requests that waited for it."""
        session: _Session | None = conn.context.get(_STATE)
        if session is not None and session.backlog:
            requests, session.backlog = session.backlog, []
            self._serve(conn, session, requests)

    def _serve(self, conn: Conn, session: _Session, requests: list[Request]) -> None:
        start = 0
        while start < len(requests):
            out, start = self._run(requests, start)
            conn.write(out)  # outside the lock: a blocking write (threads engine) stalls no one else
            if start < len(requests) and not conn.writable:
                session.backlog = requests[start:]
                return
        error = session.parser.error
        if error is not None:
            session.closing = True
            out = bytearray()
            encode_reply(ERROR, str(error).encode(), out)
            conn.write(out)
            conn.close()

    def _run(self, requests: list[Request], start: int) -> tuple[bytearray, int]:
        """Run requests from ``start`` until done or past FLUSH_AT; return the replies and the stop."""
        out = bytearray()
        kv = self.kv
        with self.lock:
            store = kv.store
            store.tick()
            store.active_expire()
            db = store.dbs[0]
            data = db.data
            aof = kv.aof
            index, end = start, len(requests)
            try:
                while index < end:
                    op, key, value = requests[index]
                    index += 1
                    if op == GET:
                        found = data.get(key)
                        if found is not None and db.expires:
                            found = db.get(key)  # the lookup that expires
                        if found is None:
                            out += NOT_FOUND_REPLY
                            continue
                        raw = string_bytes(found)
                        if raw is None:
                            encode_reply(WRONG_TYPE, WRONGTYPE_TEXT, out)
                        elif len(raw) > MAX_LENGTH:
                            encode_reply(TOO_LARGE, b"value of %d bytes" % len(raw), out)
                        else:
                            out += _pack_header(OK, len(raw))
                            out += raw
                            if len(out) >= FLUSH_AT:
                                break
                    elif kv.maxmemory and store.used > kv.maxmemory:
                        encode_reply(OOM, OOM_TEXT, out)  # Redis's noeviction: no more writes
                    else:
                        db.set_string(key, value)
                        if aof is not None:
                            kv.propagate(0, [[b"SET", key, value]])
                        out += OK_REPLY
            finally:
                kv.commands_processed += index - start
                # The changes reach the file (and the disk, under appendfsync always) before
                # any of their replies is sent: one write and one fsync for all of them.
                kv.flush_aof()
        return out, index
