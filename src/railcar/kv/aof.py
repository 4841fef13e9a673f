"""The append-only file: every change to the store as the RESP commands that make it, as Redis writes it.

Records come from ``KvServer.propagate`` (a write command that changed something,
rewritten where replaying it verbatim would not give the same result: relative
expiry times become ``PEXPIREAT``/``SET … PXAT``, SPOP becomes SREM, an expired key
a DEL) and are written by ``flush`` in one ``write`` per batch, preceded by a SELECT
when the database differs from the file's.  ``always`` fsyncs in ``flush`` before
the caller sends the batch's replies (one fsync for all of them); ``everysec``
fsyncs from a background thread once a second; ``no`` leaves it to the kernel.

``replay`` runs a file's commands against a store at start; a last command cut short
(a crash in the middle of a write) is reported and cut off, anything else that is
not RESP stops the start with AofError.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from railcar.errors import RailcarError
from railcar.kv.store import string_bytes
from railcar.proto.resp import Error, RequestParser, RespProtocolError, encode_command

if TYPE_CHECKING:
    from railcar.kv.server import KvServer

log = logging.getLogger("railcar.kv.aof")

Fsync = Literal["always", "everysec", "no"]
#: Per database with keys: its index and (key, value, expiry time or None) of every key.
Snapshot = list[tuple[int, list[tuple[bytes, Any, int | None]]]]
FSYNC_POLICIES: Final = ("always", "everysec", "no")
_READ: Final = 1 << 20


class AofError(RailcarError):
    """The append-only file cannot be read back (not RESP before its end) or written."""


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """What ``replay`` found: commands run, and bytes of an incomplete last command cut off."""

    commands: int
    truncated: int
    db: int


class AppendOnlyFile:
    """An open append-only file with its fsync policy."""

    def __init__(self, path: str, fsync: Fsync = "everysec", db: int = 0) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"appendfsync must be one of {', '.join(FSYNC_POLICIES)}, not {fsync!r}")
        self.path = path
        self.fsync = fsync
        self.db = db  # the database the file's commands apply to now (its last SELECT)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._pending = bytearray()
        self._unsynced = False
        self._lock = threading.Lock()  # the file and the rewrite's end, against the rewrite thread
        self._rewrite_buffer: bytearray | None = None  # what was written while a rewrite runs
        self._rewriter: threading.Thread | None = None
        self.rewrites = 0  # rewrites finished
        self._closed = threading.Event()
        self._syncer: threading.Thread | None = None
        if fsync == "everysec":
            self._syncer = threading.Thread(
                target=self._sync_every_second, name="railcar-aof-fsync", daemon=True
            )
            self._syncer.start()

    def set_fsync(self, fsync: str) -> None:
        """Change the fsync policy (CONFIG SET appendfsync); raises ValueError for an unknown one."""
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"appendfsync must be one of {', '.join(FSYNC_POLICIES)}, not {fsync!r}")
        self.fsync = fsync  # type: ignore[assignment]
        if fsync == "everysec" and self._syncer is None:
            self._syncer = threading.Thread(
                target=self._sync_every_second, name="railcar-aof-fsync", daemon=True
            )
            self._syncer.start()

    def record(self, db: int, args: list[bytes]) -> None:
        """Queue one command for database ``db`` (with a SELECT first when the file is on another)."""
        if db != self.db:
            self._pending += encode_command(b"SELECT", b"%d" % db)
            self.db = db
        self._pending += encode_command(*args)

    def mark(self) -> int:
        """Where the queued records end now, for ``wrap_transaction``."""
        return len(self._pending)

    def wrap_transaction(self, start: int) -> None:
        """Put the records queued since ``start`` between MULTI and EXEC (nothing if there are none)."""
        if len(self._pending) == start:
            return
        body = bytes(self._pending[start:])
        del self._pending[start:]
        head = encode_command(b"MULTI")
        self._pending += head + body + encode_command(b"EXEC")

    def flush(self) -> None:
        """Write what was queued in one write, and fsync it under ``always``; raises AofError if it fails."""
        data = self._pending
        if not data:
            return
        with self._lock:
            try:
                with memoryview(data) as view:
                    written = 0
                    while written < len(data):
                        written += os.write(self._fd, view[written:])
                if self.fsync == "always":
                    os.fsync(self._fd)
                else:
                    self._unsynced = True
                if self._rewrite_buffer is not None:
                    self._rewrite_buffer += data  # the rewritten file gets it too, after the snapshot
            except OSError as exc:
                raise AofError(f"cannot write the append-only file {self.path}: {exc}") from exc
            finally:
                data.clear()

    @property
    def rewriting(self) -> bool:
        """True while a rewrite runs."""
        return self._rewriter is not None and self._rewriter.is_alive()

    def start_rewrite(self, snapshot: Snapshot) -> None:
        """Rewrite the file from ``snapshot`` (taken after a ``flush``) in a background thread.

        The snapshot is written to ``PATH.rewrite``; what is flushed meanwhile goes to the old
        file and to a buffer; at the end the buffer is appended, the file fsynced and renamed
        over the old one, so a crash at any point leaves a complete file.  Raises RuntimeError
        if a rewrite is already running.
        """
        if self.rewriting:
            raise RuntimeError("a rewrite is already running")
        self._rewrite_buffer = bytearray(encode_command(b"SELECT", b"%d" % self.db))
        self._rewriter = threading.Thread(target=self._rewrite, args=(snapshot,), name="railcar-aof-rewrite")
        self._rewriter.start()

    def wait_rewrite(self, timeout: float | None = None) -> bool:
        """Wait for a rewrite under way to end; True when none runs any more."""
        rewriter = self._rewriter
        if rewriter is not None:
            rewriter.join(timeout)
        return not self.rewriting

    def _rewrite(self, snapshot: Snapshot) -> None:
        temporary = self.path + ".rewrite"
        try:
            with open(temporary, "wb") as file:
                out = bytearray()
                for index, entries in snapshot:
                    out += encode_command(b"SELECT", b"%d" % index)
                    for key, value, when in entries:
                        for args in _rebuild(key, value):
                            out += encode_command(*args)
                        if when is not None:
                            out += encode_command(b"PEXPIREAT", key, b"%d" % when)
                        if len(out) > _READ:
                            file.write(out)
                            out.clear()
                file.write(out)
                file.flush()
                os.fsync(file.fileno())
            with self._lock:
                buffered = self._rewrite_buffer or b""
                with open(temporary, "ab") as file:
                    file.write(buffered)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(temporary, self.path)
                old, self._fd = self._fd, os.open(self.path, os.O_WRONLY | os.O_APPEND)
                os.close(old)
                self._sync_directory()
                self.rewrites += 1
                log.info("append-only file %s rewritten", self.path)
        except OSError:
            log.exception("rewriting the append-only file %s failed; it goes on unchanged", self.path)
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        finally:
            with self._lock:
                self._rewrite_buffer = None

    def _sync_directory(self) -> None:
        """Make the rename durable."""
        directory = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def _sync_every_second(self) -> None:
        while not self._closed.wait(1.0):
            if self._unsynced:
                self._unsynced = False
                try:
                    os.fsync(self._fd)
                except OSError:
                    log.exception("fsync of the append-only file %s failed", self.path)

    def close(self) -> None:
        """Wait for a rewrite under way, write what is queued, fsync, and close the file."""
        if self._closed.is_set():
            return
        if self._rewriter is not None:
            self._rewriter.join()
        self._closed.set()
        try:
            self.flush()
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
        if self._syncer is not None:
            self._syncer.join()


def _rebuild(key: bytes, value: Any) -> list[list[bytes]]:
    """Commands that create ``key`` with ``value`` (containers in pieces of at most 64 elements)."""
    text = string_bytes(value)
    if text is not None:
        return [[b"SET", key, text]]
    if type(value) is dict:
        flat = [item for pair in value.items() for item in pair]
        return [[b"HSET", key, *flat[start : start + 128]] for start in range(0, len(flat), 128)]
    items = list(value)
    verb = b"SADD" if type(value) is set else b"RPUSH"
    return [[verb, key, *items[start : start + 64]] for start in range(0, len(items), 64)]


_IMMUTABLE: Final = (bytes, int)  # strings, kept as they are; containers are copied


def snapshot_of(server: KvServer) -> Snapshot:
    """A copy of every key, value and expiry time, for ``start_rewrite`` (O(elements), C speed)."""
    taken: Snapshot = []
    for db in server.store.dbs:
        if db.data:
            expires = db.expires
            entries = [
                (key, value if type(value) in _IMMUTABLE else type(value)(value), expires.get(key))
                for key, value in db.data.items()
            ]
            taken.append((db.index, entries))
    return taken


def replay(path: str, server: KvServer) -> ReplayReport:
    """Run the commands of the file at ``path`` (if any) against ``server``'s store; raises AofError.

    The store does not expire keys while loading (times that passed since are kept and
    expire once the server runs, as in Redis), and the file's last incomplete command,
    if any, is cut off the file with a warning.
    """
    if not os.path.exists(path):
        return ReplayReport(0, 0, 0)
    parser = RequestParser(max_buffer=1 << 62)
    client = server.new_client("aof")
    client.authenticated = True
    store = server.store
    store.loading = True
    commands = 0
    fed = 0
    good_end = 0  # offset just past the last complete command
    multi_start = 0  # offset of the MULTI of the transaction in progress
    try:
        with open(path, "rb") as file:
            while chunk := file.read(_READ):
                parser.feed(chunk)
                fed += len(chunk)
                while (args := parser.next_command()) is not None:
                    start, good_end = good_end, fed - parser.buffered
                    if not args:
                        continue
                    if args[0].lower() == b"multi":
                        multi_start = start
                    reply = client.execute(args)
                    commands += 1
                    if isinstance(reply, Error):
                        log.warning(
                            "append-only file %s: %r failed on replay: %s", path, args[:2], reply.text
                        )
        if client.multi is not None:
            good_end = multi_start  # a transaction cut before its EXEC never ran: Redis drops it too
    except RespProtocolError as exc:
        raise AofError(f"the append-only file {path} is damaged at byte {good_end}: {exc}") from exc
    finally:
        store.loading = False
        db = client.db.index
        client.discard()
        client.close()
    truncated = fed - good_end
    if truncated:
        log.warning(
            "append-only file %s ends with %d bytes of an incomplete command (a crash during a write?); "
            "cutting them off",
            path,
            truncated,
        )
        os.truncate(path, good_end)
    return ReplayReport(commands, truncated, db)
