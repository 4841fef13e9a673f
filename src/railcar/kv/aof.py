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

import logging
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from railcar.errors import RailcarError
from railcar.proto.resp import Error, RequestParser, RespProtocolError, encode_command

if TYPE_CHECKING:
    from railcar.kv.server import KvServer

log = logging.getLogger("railcar.kv.aof")

Fsync = Literal["always", "everysec", "no"]
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
        try:
            with memoryview(data) as view:
                written = 0
                while written < len(data):
                    written += os.write(self._fd, view[written:])
            if self.fsync == "always":
                os.fsync(self._fd)
            else:
                self._unsynced = True
        except OSError as exc:
            raise AofError(f"cannot write the append-only file {self.path}: {exc}") from exc
        finally:
            data.clear()

    def _sync_every_second(self) -> None:
        while not self._closed.wait(1.0):
            if self._unsynced:
                self._unsynced = False
                try:
                    os.fsync(self._fd)
                except OSError:
                    log.exception("fsync of the append-only file %s failed", self.path)

    def close(self) -> None:
        """Write what is queued, fsync, and close the file."""
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            self.flush()
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
        if self._syncer is not None:
            self._syncer.join()


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
