"""The key–value server: RESP requests from any engine run against one shared store.

Each read is parsed (``proto/resp``), its requests run in order against the store
(``kv``), and their replies encoded into one buffer written once.  Only when that buffer
passes ``FLUSH_AT`` is it written early; if the connection then stops taking output
(over the engine's high-water mark), the requests still unparsed wait in the parser
until ``on_writable``, so a pipeline of large replies never grows the server's memory past
the engine's bound.  One lock serialises the store, which the ``threads`` engine reaches
from a thread per connection (uncontended on the event-loop engines).

A client blocked by BLPOP and its kin (``kv/blocking.py``) runs nothing more until it is
answered: by the command that gave its key a list (the reply is sent right after the
replies of the read that ran that command, then the client's own waiting requests run)
or by a sweep every ``BLOCK_TICK`` s that answers the timed-out.  Each session has its
own lock, so that on the ``threads`` engine the thread that answers a client and the
client's own thread never run its requests at once; replies are delivered only once
the delivering thread holds no session's lock, so two threads never wait on each other.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from typing import Any, Final

from railcar.engine.api import Conn, Handler, Server
from railcar.engine.sweeper import Sweeper
from railcar.errors import ConnectionClosed
from railcar.kv.aof import FSYNC_POLICIES, AppendOnlyFile, Fsync, replay
from railcar.kv.blocking import Blocked, block, expire, serve_ready
from railcar.kv.client import Client
from railcar.kv.executor import new_executor
from railcar.kv.server import KvServer
from railcar.kv.table import HOT, CommandFn
from railcar.proto.resp import (
    OK,
    AnyParser,
    Error,
    QueryBufferOverflow,
    RequestParser,
    RespProtocolError,
    encode_reply,
    new_parser,
)

log = logging.getLogger("railcar.kv")

#: Replies are written early once a read's output reaches this many bytes.
FLUSH_AT: Final = 256 * 1024
#: How often the background sweep looks for expired keys (Redis's default hz is 10).
SWEEP_EVERY: Final = 0.1
#: Redis's client-query-buffer-limit: a client with more unparsed request bytes is closed.
MAX_QUERY_BUFFER: Final = 1 << 30
#: How often blocked clients' timeouts are checked: a timeout is answered up to this late.
BLOCK_TICK: Final = 0.05

# Replies encoded once: bulk-string heads by length (under 1024), integers -1 to 1022.
_BULK_HEADS: Final = [b"$%d\r\n" % size for size in range(1024)]
_SMALL_INTS: Final = [b":%d\r\n" % value for value in range(-1, 1023)]
_HOT_ARGC: Final = len(HOT)
#: ``HOT``'s shape with nothing in it: inside MULTI, before AUTH or with an append-only file.
_NOT_HOT: Final[list[dict[bytes, CommandFn]]] = [{} for _ in HOT]

_STATE = "kv"


class _Session:
    __slots__ = ("client", "conn", "lock", "owed", "parser", "stopped")

    def __init__(self, conn: Conn, client: Client, parser: AnyParser) -> None:
        self.conn = conn
        self.client = client
        self.parser = parser
        self.stopped = False  # QUIT or a protocol error: answer what came before, then close
        self.owed = False  # its blocking command is answered, the reply not sent yet: run nothing
        self.lock = threading.RLock()


class KvHandler(Handler):
    """Serves Redis clients on any engine; ``server`` holds the store shared by every connection."""

    def __init__(
        self,
        server: KvServer | None = None,
        requirepass: str | None = None,
        max_query_buffer: int = MAX_QUERY_BUFFER,
        parser: str = "auto",
        appendonly: str | None = None,
        appendfsync: Fsync = "everysec",
        maxmemory: int = 0,
        executor: str = "auto",
    ) -> None:
        """Raises ValueError for an unknown parser, executor or fsync policy, AofError for a damaged AOF."""
        new_parser(kind=parser)  # raises ValueError for a kind unknown or not available here
        #: The C executor of hot requests (``kv/executor.py``), or None: every request through Python.
        self.run_hot = new_executor(executor)
        if appendfsync not in FSYNC_POLICIES:
            raise ValueError(f"appendfsync must be one of {', '.join(FSYNC_POLICIES)}, not {appendfsync!r}")
        self.kv = server if server is not None else KvServer(requirepass=requirepass, maxmemory=maxmemory)
        if appendonly is not None:
            report = replay(appendonly, self.kv)
            log.info("append-only file %s: %d commands replayed", appendonly, report.commands)
            self.kv.open_aof(AppendOnlyFile(appendonly, appendfsync, db=report.db))
        self.max_query_buffer = max_query_buffer
        self.parser = parser
        self.lock = threading.Lock()
        self.closed = threading.Event()
        #: Sessions of blocked clients, and of answered ones until their reply is sent.
        self._parked: dict[Client, _Session] = {}
        self._timeouts = Sweeper(BLOCK_TICK, self._expire_blocked)

    def on_start(self, server: Server) -> None:
        """Start the background sweep of expired keys and the check of blocked clients' timeouts."""
        sweeper = threading.Thread(
            target=_sweep, args=(weakref.ref(self),), name="railcar-kv-expire", daemon=True
        )
        sweeper.start()
        self._timeouts.start(server)

    def close(self) -> None:
        """Stop the background sweep (it also stops once the handler is garbage) and close the AOF."""
        self.closed.set()
        with self.lock:
            if self.kv.aof is not None:
                self.kv.aof.close()
                self.kv.aof = None

    def sweep(self) -> int:
        """Delete expired keys by sampling, as a read's work does; return how many."""
        with self.lock:
            self.kv.store.tick()
            deleted = self.kv.store.active_expire()
            self.kv.flush_aof()
            return deleted

    def on_open(self, conn: Conn) -> None:
        """Give the connection its session and request parser."""
        with self.lock:
            client = self.kv.new_client(conn.peer)
        parser = new_parser(self.max_query_buffer, self.parser)
        parser.authenticated = client.authenticated
        conn.context[_STATE] = _Session(conn, client, parser)

    def on_data(self, conn: Conn, data: memoryview) -> None:
        """Parse ``data``, run the requests it completes and write their replies."""
        session: _Session = conn.context[_STATE]
        if session.stopped:
            return  # closing: Redis reads nothing more from such a client
        with session.lock:
            try:
                session.parser.feed(data)
            except QueryBufferOverflow as exc:
                log.warning("closing client %s: %s", conn.peer, exc)
                session.stopped = True
                conn.abort()
                return
            answered = self._serve(conn, session)
        self._deliver(answered)  # after this read's own replies, as Redis orders them

    def on_writable(self, conn: Conn) -> None:
        """Output drained: run the requests that waited for it."""
        session: _Session | None = conn.context.get(_STATE)
        if session is not None and not session.stopped:
            with session.lock:
                answered = self._serve(conn, session)
            self._deliver(answered)

    def _serve(self, conn: Conn, session: _Session) -> list[tuple[Client, Any]]:
        """Run the session's requests while it may; return the blocked clients they answered.

        The caller delivers those once it holds no session's lock.
        """
        answered: list[tuple[Client, Any]] = []
        while True:
            out, more = self._run_batch(session, answered)
            if out:
                try:
                    conn.write(out)  # outside the lock: a blocking write (threads engine) stalls no one else
                except ConnectionClosed:
                    return answered  # the peer left; the clients it woke still get their replies
            if session.stopped:
                conn.close()
                return answered
            if not more or not conn.writable:
                return answered  # done, or the rest waits in the parser until on_writable

    def _deliver(self, answered: list[tuple[Client, Any]]) -> None:
        """Send woken clients their replies, then run the requests they held back.

        One at a time from a queue: a woken client's requests may wake others, who join
        the queue, so there is no recursion and no thread ever holds two sessions' locks.
        """
        queue = deque(answered)
        while queue:
            client, reply = queue.popleft()
            with self.lock:
                session = self._parked.pop(client, None)
            if session is None:
                continue  # closed meanwhile
            out = bytearray()
            encode_reply(reply, out, client.resp3)
            with session.lock:
                session.owed = False
                try:
                    session.conn.write(out)
                    queue.extend(self._serve(session.conn, session))
                except ConnectionClosed:
                    continue  # it left: what it held back goes with it
                except Exception:  # one client's failure must not cost the others their replies
                    log.exception("serving a woken client failed; closing it")
                    session.conn.abort()

    def _expire_blocked(self) -> None:
        """Answer the blocked clients whose timeout has passed (run on the engine's thread by the sweeper)."""
        with self.lock:
            if not self._parked:
                return
            answered = expire(list(self._parked), time.monotonic())
            for client, _ in answered:
                self._parked[client].owed = True
        self._deliver(answered)

    def _park(self, session: _Session, blocked: Blocked) -> None:
        """Block the session's client (under the lock): it runs nothing until it is answered."""
        block(session.client, blocked)
        self._parked[session.client] = session

    def _answer_ready(self, answered: list[tuple[Client, Any]]) -> None:
        """Answer the clients a command gave a list to (under the lock); their sessions owe a reply."""
        woken = serve_ready(self.kv.store)
        for client, _ in woken:
            self._parked[client].owed = True
        answered += woken

    def _run_batch(self, session: _Session, answered: list[tuple[Client, Any]]) -> tuple[bytearray, bool]:
        """Run requests until the parser has none complete or the replies pass FLUSH_AT.

        Returns the encoded replies and whether requests may remain; blocked clients the
        requests answered go to ``answered``.
        """
        out = bytearray()
        with self.lock:
            if session.stopped or session.owed or session.client.blocked is not None:
                return out, False  # closed, or its requests wait for its blocking command's reply
            store = self.kv.store
            store.tick()
            store.active_expire()
            parser = session.parser
            batched = type(parser) is not RequestParser
            try:
                while True:
                    # Before AUTH, requests are parsed one at a time: the stricter limits end
                    # with the AUTH that runs, not with the read that brought it.
                    if batched and parser.authenticated:
                        try:
                            batch = parser.take_ready()  # type: ignore[union-attr]
                        except RespProtocolError:
                            batch = []  # next_command raises it again, and _run_one answers it
                        if batch:
                            more = self._run_parsed(session, batch, out, answered)
                            if more is not None:
                                return out, more
                            if not parser.buffered:
                                return out, False  # the read's requests all ran: no second look
                            continue
                    done = self._run_one(session, out, answered)
                    if done is not None:
                        return out, done
            finally:
                # The batch's changes reach the file (and the disk, under appendfsync always)
                # before any of its replies is sent: one write and one fsync for all of them.
                if self.kv.aof is not None:
                    self.kv.flush_aof()

    def _run_parsed(
        self, session: _Session, batch: list[list[bytes]], out: bytearray, answered: list[tuple[Client, Any]]
    ) -> bool | None:
        """Run a batch of parsed requests: None when all ran, else whether requests may remain.

        The hot loop of the server: the C executor, where there is one, runs the plain hot
        requests in a row and hands back the first other one; a command that cannot change
        how the next one must run (see ``HOT``) is called straight from the table, the usual
        replies appended inline.
        """
        client = session.client
        kv = self.kv
        hot = _hot_table(kv, client)
        run_hot = self.run_hot if hot is HOT else None
        resp3 = client.resp3
        null = b"_\r\n" if resp3 else b"$-1\r\n"
        heads, ints, ok, flush_at = _BULK_HEADS, _SMALL_INTS, OK, FLUSH_AT
        ready = kv.store.ready
        count = len(batch)
        index = skipped = 0  # index: the next request to run
        try:
            while index < count:
                if run_hot is not None:
                    index = run_hot(batch, index, client.db, out, resp3, flush_at)
                    if len(out) >= flush_at:
                        session.parser.put_back(batch[index:])  # type: ignore[union-attr]
                        return True
                    if index == count:
                        break
                args = batch[index]
                index += 1
                argc = len(args)
                fn = hot[argc].get(args[0]) if 0 < argc < _HOT_ARGC else None
                if fn is not None:
                    try:
                        reply = fn(client, args)
                    except Exception:  # a bug in one command must not take the connection or server down
                        log.exception("command %s failed", args[0])
                        reply = Error("ERR internal error")
                else:
                    if not argc:
                        skipped += 1
                        continue  # an empty array: Redis skips it
                    reply = client.execute(args)
                    if client.closing:
                        encode_reply(reply, out, resp3)
                        session.stopped = True
                        return False
                    if type(reply) is Blocked:
                        self._park(session, reply)
                        session.parser.put_back(batch[index:])  # type: ignore[union-attr]
                        return False
                    hot = _hot_table(kv, client)  # MULTI, AUTH, CONFIG SET maxmemory: read again
                    run_hot = self.run_hot if hot is HOT else None
                    resp3 = client.resp3  # HELLO may have switched it
                    null = b"_\r\n" if resp3 else b"$-1\r\n"
                kind = type(reply)
                if kind is bytes:
                    size = len(reply)
                    out += heads[size] if size < 1024 else b"$%d\r\n" % size
                    out += reply
                    out += b"\r\n"
                elif reply is ok:
                    out += b"+OK\r\n"
                elif kind is int:
                    out += ints[reply + 1] if -1 <= reply < 1023 else b":%d\r\n" % reply
                elif reply is None:
                    out += null
                else:
                    encode_reply(reply, out, resp3)
                if ready:
                    self._answer_ready(answered)
                if len(out) >= flush_at:
                    session.parser.put_back(batch[index:])  # type: ignore[union-attr]
                    return True
            return None
        finally:
            kv.commands_processed += index - skipped

    def _run_one(self, session: _Session, out: bytearray, answered: list[tuple[Client, Any]]) -> bool | None:
        """Run the next request the parser completes: None if it ran, else whether requests may remain."""
        client, parser = session.client, session.parser
        try:
            args = parser.next_command()
        except RespProtocolError as exc:
            encode_reply(Error(f"ERR {exc}"), out, client.resp3)
            session.stopped = True
            return False
        if not args:  # None: no complete request; empty: an empty array or blank line, skipped
            return False if args is None else None
        reply = client.execute(args)
        self.kv.commands_processed += 1
        if type(reply) is Blocked:
            self._park(session, reply)
            return False
        encode_reply(reply, out, client.resp3)
        if self.kv.store.ready:
            self._answer_ready(answered)
        if client.closing:
            session.stopped = True
            return False
        if not parser.authenticated and client.authenticated:
            parser.authenticated = True  # Redis's looser limits from now on
        if len(out) >= FLUSH_AT:
            return True
        return None

    def on_close(self, conn: Conn, exc: BaseException | None) -> None:
        """Forget the connection's session and its WATCHes."""
        session: _Session | None = conn.context.get(_STATE)
        if session is not None:
            with self.lock:
                session.stopped = True  # another thread delivering to it must not park it again
                self._parked.pop(session.client, None)
                session.client.close()


def _hot_table(kv: KvServer, client: Client) -> list[dict[bytes, CommandFn]]:
    """``HOT`` when its commands may skip ``Client.execute``'s checks, else a table of nothing.

    They may outside MULTI, once authenticated, with no append-only file to record writes in
    and no maxmemory to refuse them for: what ``Client.execute``'s own fast path requires.
    """
    if kv.aof is None and not kv.maxmemory and client.multi is None and client.authenticated:
        return HOT
    return _NOT_HOT


def _sweep(handler_ref: weakref.ref[KvHandler]) -> None:
    """Every SWEEP_EVERY s, expire keys nobody reads; ends with the handler.

    Holds only a weak reference, so a server dropped without ``close`` ends the thread too.
    """
    while True:
        handler = handler_ref()
        if handler is None or handler.closed.is_set():
            return
        try:
            handler.sweep()
        except Exception:  # the sweep must outlive a bug in one pass
            log.exception("expiry sweep failed")
        closed = handler.closed
        del handler
        if closed.wait(SWEEP_EVERY):
            return
