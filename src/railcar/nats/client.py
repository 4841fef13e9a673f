"""The asyncio NATS client: one connection, one coalescing flusher, subscriptions, request/reply.

Publishes are appended to one output list per client; a single flusher, scheduled for the
end of the loop turn (or run at once past ``FLUSH_AT`` bytes), writes them with one
``transport.write``.  While the client is reconnecting the same list is the pending
buffer, bounded by ``pending_size``: over it, publish raises OutboundBufferFull.  SUB,
UNSUB and PING go out at once, after whatever is queued, so the server sees operations in
the order they were made and a publish never travels twice after a reconnection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol

from railcar.clientcore.connection import ClientConnection
from railcar.clientcore.dial import Dial, tcp_dial
from railcar.clientcore.gate import Gate
from railcar.clientcore.reconnect import Callback, ReconnectPolicy, notify_soon
from railcar.errors import ConnectionLost, InFlightLimit, ProtocolError, RequestTimeout, renewed
from railcar.nats.errors import (
    AuthorizationError,
    BadHeaders,
    MaxPayloadExceeded,
    NatsError,
    NoResponders,
    OutboundBufferFull,
    ServerError,
)
from railcar.nats.nuid import Nuid
from railcar.nats.requests import RequestTable
from railcar.nats.servers import Server, ServerPool
from railcar.nats.subscription import (
    DEFAULT_PENDING_BYTES,
    DEFAULT_PENDING_MSGS,
    MessageHandler,
    Subscription,
)
from railcar.proto.nats import (
    MAX_PAYLOAD,
    NO_RESPONDERS,
    PING,
    PING_OP,
    PONG,
    PONG_OP,
    BadMessage,
    Err,
    Headers,
    Info,
    Msg,
    Parser,
    connect_op,
    header_block,
    hpub_op,
    pub_op,
    queue_bytes,
    sub_op,
    subject_bytes,
    unsub_op,
)

log = logging.getLogger("railcar.nats")

#: Queued output past this many bytes is written at once instead of at the end of the turn.
FLUSH_AT: Final = 64 * 1024
#: Subjects remembered already validated and encoded (the cache is emptied when full).
SUBJECT_CACHE: Final = 4096

HeadersArg = Headers | Mapping[str, str | Sequence[str]] | None


class _Target(Protocol):
    """What the reader hands a message to: a subscription, or the request inbox."""

    subject: str

    def deliver(self, msg: Msg) -> None: ...


class _Connection(ClientConnection):
    """One transport's events, passed to the client; a connection that is not the live one is ignored."""

    client: Client

    def __init__(self, client: Client, server: Server, max_payload: int) -> None:
        super().__init__(client)
        self.server = server
        self.parser = Parser(max_payload=max_payload)
        self.info: asyncio.Future[dict[str, Any]] = client._loop.create_future()
        # One per PING sent, in order: its waiter (None for liveness PINGs) and ``written`` when it left.
        self.pongs: deque[tuple[asyncio.Future[None] | None, int]] = deque()
        self.written = 0  # writes to this transport that held publishes
        self.confirmed = 0  # of those, how many a PONG proved the server has
        self.reported = 0  # of those, how many a flush failed at the loss covered
        self.outstanding = 0  # liveness PINGs sent since the last PONG
        self.error: ServerError | None = None  # the last -ERR, which usually precedes a close
        self.abandoned: str | None = None  # why the client itself aborted the connection
        self.tls = False  # upgraded to TLS after the server's INFO

    def lost_error(self, exc: Exception | None) -> ConnectionLost:
        """Why the connection ended: the client's own reason, the server's last -ERR, or the socket's."""
        if self.abandoned is not None:
            return ConnectionLost(self.abandoned)
        if self.error is not None:
            return ConnectionLost(f"server closed the connection: {self.error}")
        return ConnectionLost(f"connection lost: {exc}" if exc else "connection closed by the server")

    def fail(self, error: BaseException) -> None:
        """Fail the handshake and every flush waiting on this connection."""
        if not self.info.done():
            self.info.set_exception(error)
        pongs, self.pongs = self.pongs, deque()
        for pong, mark in pongs:
            if pong is not None and not pong.done():
                pong.set_exception(renewed(error))
                self.reported = max(self.reported, mark)

    def sent_ping(self, pong: asyncio.Future[None] | None) -> None:
        """A PING just left: its PONG will prove the server has every publish written before it."""
        self.pongs.append((pong, self.written))


class Client:
    """A NATS connection; make one with ``await railcar.nats.connect(...)``."""

    def __init__(
        self,
        pool: ServerPool,
        *,
        name: str | None,
        user: str | None,
        password: str | None,
        token: str | None,
        dial: Dial | None,
        tls: ssl.SSLContext | None,
        tls_hostname: str | None,
        policy: ReconnectPolicy,
        connect_timeout: float,
        ping_interval: float,
        max_outstanding_pings: int,
        pending_size: int,
        inbox_prefix: str,
        write_buffer: int,
        max_payload_in: int,
        max_in_flight: int,
        error_cb: Callback | None,
        closed_cb: Callback | None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._pool = pool
        self._name = name
        self._user, self._password, self._token = user, password, token
        self._dial = dial
        self._tls, self._tls_hostname = tls, tls_hostname
        self._policy = policy
        self._connect_timeout = connect_timeout
        self._ping_interval = ping_interval
        self._max_outstanding = max_outstanding_pings
        self._pending_size = pending_size
        self._inbox_prefix = inbox_prefix
        self._write_buffer = write_buffer
        self._max_payload_in = max_payload_in
        self._max_in_flight = max_in_flight
        self._error_cb = error_cb
        self._closed_cb = closed_cb
        self._conn: _Connection | None = None
        self._out: list[bytes] = []
        self._out_size = 0
        self._pub_queued = False  # the output holds a publish (not only requests) a flush vouches for
        self._flush_handle: asyncio.Handle | None = None
        self._subs: dict[int, _Target] = {}
        self._next_sid = 0
        self._subjects: dict[str, bytes] = {}
        self._requests: RequestTable | None = None
        self._nuid = Nuid()
        self._gate = Gate(self._loop)  # callers waiting to be connected, for room, for writes
        self._tasks: set[asyncio.Future[Any]] = set()
        self._reconnecting: asyncio.Task[None] | None = None
        self._ping_timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._failure: BaseException = ConnectionLost("client closed")
        self._unconfirmed: ConnectionLost | None = None  # a loss the next flush must report
        self.server_info: dict[str, Any] = {}
        self.max_payload = 1024 * 1024
        self.reconnects = 0
        self.last_error: BaseException | None = None

    # -- state -----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while a connection is up (False while reconnecting and once closed)."""
        return self._conn is not None

    @property
    def closed(self) -> bool:
        """True once closed for good (``close``, or reconnection gave up)."""
        return self._closed

    @property
    def connected_url(self) -> str | None:
        """``nats://host:port`` of the live connection, None when there is none."""
        return None if self._conn is None else f"nats://{self._conn.server.address}"

    @property
    def pending_bytes(self) -> int:
        """Bytes of publishes queued and not yet handed to the transport (the pending buffer while away)."""
        return self._out_size

    @property
    def servers(self) -> list[str]:
        """The pool: given servers and those learnt from INFO."""
        return [f"nats://{server.address}" for server in self._pool.servers]

    # -- publishing ------------------------------------------------------------------------

    async def publish(
        self,
        subject: str,
        payload: bytes | bytearray | memoryview = b"",
        reply: str = "",
        headers: HeadersArg = None,
        timeout: float | None = None,
    ) -> None:
        """Queue a message for the flusher (waits only while the transport is full, at most ``timeout`` s).

        Raises InvalidSubject, InvalidHeader, MaxPayloadExceeded (over the server's
        max_payload), OutboundBufferFull (reconnecting, the pending buffer is full),
        RequestTimeout (the transport stayed full; the message is queued all the same) and
        ConnectionLost once closed.
        """
        subj = self._subjects.get(subject) or self._subject(subject)
        reply_b = (self._subjects.get(reply) or self._subject(reply, "reply subject")) if reply else b""
        self._queue_pub(subj, payload, reply_b, headers)
        self._pub_queued = True
        conn = self._conn
        if conn is not None and conn.paused:
            await self._ready(None if timeout is None else self._loop.time() + timeout, timeout)

    def _queue_pub(
        self, subj: bytes, payload: bytes | bytearray | memoryview, reply: bytes, headers: HeadersArg
    ) -> None:
        if self._closed:
            raise renewed(self._failure)
        data = payload if isinstance(payload, bytes) else bytes(payload)
        if headers:
            block = header_block(headers)
            size = len(block) + len(data)
            op = hpub_op(subj, block, data, reply)
        else:
            size = len(data)
            op = pub_op(subj, data, reply)
        if size > self.max_payload:
            raise MaxPayloadExceeded(
                f"message of {size} bytes is over the server's max_payload of {self.max_payload}"
            )
        self._queue_out(op)

    def _queue_out(self, op: bytes) -> None:
        """Append to the output; the flusher writes it (at once past FLUSH_AT)."""
        size = self._out_size + len(op)
        if self._conn is None:
            if size > self._pending_size:
                raise OutboundBufferFull(
                    f"not connected and the pending buffer holds {self._out_size} bytes "
                    f"(pending_size={self._pending_size}); the message was not queued"
                )
            self._out.append(op)
            self._out_size = size
            return
        self._out.append(op)
        self._out_size = size
        if size >= FLUSH_AT:
            self._flush_out()
        elif self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush_out)

    def _flush_out(self) -> None:
        """The flusher: everything queued in one write."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        conn = self._conn
        if conn is None or conn.transport is None or not self._out:
            return
        out = self._out
        self._out = []
        self._out_size = 0
        conn.transport.write(out[0] if len(out) == 1 else b"".join(out))
        if self._pub_queued:  # a lost request fails by itself; a lost publish only a flush can report
            self._pub_queued = False
            conn.written += 1

    def _write_now(self, data: bytes) -> None:
        """Write a control operation after everything queued before it (dropped while disconnected)."""
        conn = self._conn
        if conn is None or conn.transport is None:
            return
        self._flush_out()
        conn.transport.write(data)

    def _subject(self, subject: str, what: str = "subject") -> bytes:
        encoded = subject_bytes(subject, what)
        if len(self._subjects) >= SUBJECT_CACHE:
            self._subjects.clear()
        self._subjects[subject] = encoded
        return encoded

    async def flush(self, timeout: float = 10.0) -> None:
        """Write what is queued and wait for the server's PONG to a PING sent after it.

        When it returns, the server has processed everything published before it.  Raises
        RequestTimeout (no PONG, or no connection, within ``timeout`` s) or ConnectionLost:
        the connection was lost before its PONG, or a connection that carried earlier
        publishes was lost before the server confirmed them (reported once, to the flushes
        waiting at the loss or else to the next one), so those publishes may be lost.
        """
        deadline = self._loop.time() + timeout
        self._raise_unconfirmed()
        await self._ready(deadline, timeout)
        self._raise_unconfirmed()  # a loss while this flush waited to be connected
        conn = self._conn
        assert conn is not None  # _ready returns connected
        pong: asyncio.Future[None] = self._loop.create_future()
        self._write_now(PING_OP)
        conn.sent_ping(pong)
        try:
            await asyncio.wait_for(pong, max(0.0, deadline - self._loop.time()))
        except TimeoutError:
            raise RequestTimeout(f"no PONG from the server within {timeout} s") from None

    def _raise_unconfirmed(self) -> None:
        """Raise, once, the loss of a connection that carried publishes no flush has yet reported lost."""
        error, self._unconfirmed = self._unconfirmed, None
        if error is not None:
            raise error

    # -- subscribing -----------------------------------------------------------------------

    async def subscribe(
        self,
        subject: str,
        queue: str = "",
        cb: MessageHandler | None = None,
        *,
        max_msgs: int = 0,
        pending_msgs: int = DEFAULT_PENDING_MSGS,
        pending_bytes: int = DEFAULT_PENDING_BYTES,
    ) -> Subscription:
        """Subscribe (in a queue group if ``queue``); ``cb`` (plain or async) gets each message, else iterate.

        ``max_msgs`` > 0 unsubscribes after that many messages.  Over ``pending_msgs`` or
        ``pending_bytes`` queued, messages are dropped and a SlowConsumer error is reported.
        Raises InvalidSubject, ValueError (bad limits) or ConnectionLost once closed.
        """
        if self._closed:
            raise renewed(self._failure)
        subj = subject_bytes(subject)
        group = queue_bytes(queue) if queue else b""
        if pending_msgs < 1 or pending_bytes < 1 or max_msgs < 0:
            raise ValueError(
                f"need pending_msgs >= 1, pending_bytes >= 1, max_msgs >= 0 "
                f"(got {pending_msgs}, {pending_bytes}, {max_msgs})"
            )
        self._next_sid += 1
        sid = self._next_sid
        sub = Subscription(self, sid, subject, queue, cb, max_msgs, pending_msgs, pending_bytes)
        self._subs[sid] = sub
        self._write_now(sub_op(subj, sid, group) + (unsub_op(sid, max_msgs) if max_msgs else b""))
        return sub

    async def _unsubscribe(self, sub: Subscription, after: int) -> None:
        if after > sub.delivered:
            sub.max_msgs = after
            self._write_now(unsub_op(sub.sid, after))
            return
        if self._subs.pop(sub.sid, None) is not None:
            self._write_now(unsub_op(sub.sid))
        sub._end()

    def _forget(self, sub: Subscription) -> None:
        """A subscription reached its max_msgs: the server sends it no more."""
        self._subs.pop(sub.sid, None)
        sub._end()

    async def _drain_sub(self, sub: Subscription, timeout: float) -> None:
        if sub.sid in self._subs:
            self._write_now(unsub_op(sub.sid))
            with contextlib.suppress(RequestTimeout, ConnectionLost):
                await self.flush(timeout)  # every message sent before the UNSUB has arrived
            self._subs.pop(sub.sid, None)
        sub._end()
        await asyncio.wait_for(sub._idle(), timeout)

    # -- request/reply ---------------------------------------------------------------------

    async def request(
        self,
        subject: str,
        payload: bytes | bytearray | memoryview = b"",
        timeout: float = 2.0,
        headers: HeadersArg = None,
    ) -> Msg:
        """Publish a request and return the first reply; raises NoResponders, RequestTimeout, ConnectionLost.

        ``timeout`` is one deadline for everything: room in the transport and the reply.
        Raises InFlightLimit when ``max_in_flight`` requests already wait (nothing is sent),
        and like ``publish`` for a message that cannot be sent.
        """
        subj = self._subjects.get(subject) or self._subject(subject)
        table = self._requests or self._start_inbox()
        if len(table) >= self._max_in_flight:
            raise InFlightLimit(
                f"{len(table)} requests are waiting for replies (max_in_flight={self._max_in_flight}); "
                "this one was not sent"
            )
        future: asyncio.Future[Msg] = self._loop.create_future()
        reply = table.new(future, subject)
        timer = self._loop.call_later(timeout, table.expire, reply, timeout)
        try:
            self._queue_pub(subj, payload, reply, headers)
            conn = self._conn
            if conn is not None and conn.paused:
                await self._ready(self._loop.time() + timeout, timeout)
            return await future
        except BaseException:
            table.forget(reply)  # timed out, cancelled, or never sent
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()  # its timer failed it too: retrieved here, or asyncio logs it
            raise
        finally:
            timer.cancel()

    async def request_many(
        self,
        subject: str,
        payload: bytes | bytearray | memoryview = b"",
        timeout: float = 2.0,
        max_msgs: int = 0,
        sentinel: Callable[[Msg], bool] | None = None,
        headers: HeadersArg = None,
    ) -> list[Msg]:
        """Publish a request; gather replies until ``max_msgs``, the timeout, or a reply ``sentinel`` accepts.

        The replies come back on an inbox of their own, unsubscribed on return; the
        sentinel reply is not returned.  Raises NoResponders when the first reply says
        nobody listens, and like ``publish`` for a message that cannot be sent (RequestTimeout
        when the transport stayed full for the whole ``timeout``).
        """
        if max_msgs < 0:
            raise ValueError(f"need max_msgs >= 0 (got {max_msgs})")
        deadline = self._loop.time() + timeout
        inbox = f"{self._inbox_prefix}.{self._nuid.next().decode()}"
        # The server may stop at max_msgs replies (one more when a sentinel may end the stream).
        limit = max_msgs + (1 if sentinel is not None else 0) if max_msgs else 0
        sub = await self.subscribe(inbox, max_msgs=limit)
        replies: list[Msg] = []
        try:
            await self.publish(subject, payload, reply=inbox, headers=headers, timeout=timeout)
            while (remaining := deadline - self._loop.time()) > 0:
                try:
                    msg = await sub.next_msg(remaining)
                except (TimeoutError, StopAsyncIteration):
                    break
                status = msg[4].status if msg[4] is not None else None
                if not replies and status == NO_RESPONDERS and not msg[3]:
                    raise NoResponders(f"no responders on {subject!r}")
                if sentinel is not None and sentinel(msg):
                    break
                replies.append(msg)
                if max_msgs and len(replies) >= max_msgs:
                    break
        finally:
            if not sub.closed:
                await sub.unsubscribe()
        return replies

    def _start_inbox(self) -> RequestTable:
        """The one wildcard subscription every request's reply comes back on."""
        if self._closed:
            raise renewed(self._failure)
        table = RequestTable(self._inbox_prefix)
        self._next_sid += 1
        table.sid = self._next_sid
        self._subs[table.sid] = table
        self._requests = table
        self._write_now(sub_op(table.subject.encode(), table.sid))
        return table

    @property
    def late_replies(self) -> int:
        """Replies that came after their request stopped waiting."""
        return 0 if self._requests is None else self._requests.late_replies

    # -- closing ---------------------------------------------------------------------------

    async def drain(self, timeout: float = 30.0) -> None:
        """Unsubscribe everything, handle what was in flight, flush publishes, then close; raises nothing."""
        subs = [sub for sub in self._subs.values() if isinstance(sub, Subscription)]
        for sub in subs:
            self._write_now(unsub_op(sub.sid))
        try:
            await self.flush(timeout)
        except (RequestTimeout, ConnectionLost) as exc:
            log.warning("drain: %s", exc)
        for sub in subs:
            self._subs.pop(sub.sid, None)
            sub._end()
        try:
            await asyncio.wait_for(asyncio.gather(*(sub._idle() for sub in subs)), timeout)
        except TimeoutError:
            log.warning("drain: subscriptions still busy after %s s", timeout)
        await self.close()

    async def close(self, deadline: float = 5.0) -> None:
        """Close for good: queued publishes are written, waiting calls fail; raises nothing."""
        if self._closed and self._conn is None:
            return
        self._closed = True
        self._failure = ConnectionLost("client closed")
        reconnecting, self._reconnecting = self._reconnecting, None
        if reconnecting is not None:
            reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reconnecting
        self._flush_out()
        conn, self._conn = self._conn, None
        self._stop_pings()
        self._end_everything(self._failure)
        if conn is not None and conn.transport is not None:
            conn.fail(ConnectionLost("client closed"))
            conn.transport.close()
            try:
                await asyncio.wait_for(asyncio.shield(conn.closed), deadline)
            except TimeoutError:
                conn.transport.abort()
        self._notify(self._closed_cb)

    def _end_everything(self, failure: BaseException) -> None:
        if self._requests is not None:
            self._requests.fail_all(failure)
        for target in self._subs.values():
            if isinstance(target, Subscription):
                target._end()
                if target._task is not None:
                    target._task.cancel()
        self._subs.clear()
        self._out.clear()
        self._out_size = 0
        self._wake_waiters()

    async def __aenter__(self) -> Client:
        """Use as ``async with await railcar.nats.connect(...) as nc``."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the client."""
        await self.close()

    # -- waiting ---------------------------------------------------------------------------

    async def _ready(self, deadline: float | None, timeout: float | None) -> None:
        """Wait until connected and the transport takes writes; raises RequestTimeout, ConnectionLost."""

        def ready() -> bool:
            if self._closed:
                raise renewed(self._failure)
            conn = self._conn
            return conn is not None and not conn.paused

        def waiting_for() -> str:
            if self._conn is None:
                return "not connected (reconnecting)"
            return "the connection took no more writes (the server is not reading)"

        await self._gate.wait(ready, deadline, timeout, waiting_for)

    def _wake_waiters(self) -> None:
        self._gate.open()

    # -- the reader ------------------------------------------------------------------------

    def _on_data(self, conn: _Connection, data: bytes) -> None:
        try:
            events = conn.parser.feed(data)
        except ProtocolError as exc:
            log.warning(
                "closing connection to %s: invalid data from the server: %s", conn.server.address, exc
            )
            failure = ProtocolError(f"invalid data from the server: {exc}")
            self._report(failure)
            conn.fail(failure)
            self._on_lost(conn, ConnectionLost(str(failure)))
            if conn.transport is not None:
                conn.transport.abort()
            return
        subs = self._subs
        for event in events:
            if event.__class__ is Msg:
                target = subs.get(event[1])
                if target is not None:
                    target.deliver(event)
            elif event is PING:
                if conn.transport is not None:
                    conn.transport.write(PONG_OP)
            elif event is PONG:
                conn.outstanding = 0
                if conn.pongs:
                    pong, conn.confirmed = conn.pongs.popleft()
                    if pong is not None and not pong.done():
                        pong.set_result(None)
            elif isinstance(event, Info):
                self._on_info(conn, event.options)
            elif isinstance(event, Err):
                self._on_err(conn, event.message)
            elif isinstance(event, BadMessage):
                subject = event.subject.decode(errors="replace")
                reason = f"message on {subject!r} dropped: {event.reason}"
                self._report(BadHeaders(reason, subject, event.sid))

    def _on_info(self, conn: _Connection, options: dict[str, Any]) -> None:
        if not conn.info.done():
            conn.info.set_result(options)
        if conn is self._conn:
            self.server_info = options
            if "max_payload" in options:  # a server's INFO may change it while connected
                self.max_payload = int(options["max_payload"])
        urls = options.get("connect_urls")
        if isinstance(urls, list) and urls:
            added = self._pool.learn([str(url) for url in urls])
            if added:
                log.info("learnt %d servers from INFO connect_urls", added)

    def _on_err(self, conn: _Connection, message: str) -> None:
        lower = message.lower()
        error: ServerError
        if "authorization" in lower or "authentication" in lower:
            error = AuthorizationError(message)
        else:
            error = ServerError(message)
        self.last_error = error
        if error.fatal:
            conn.error = error  # the server closes the connection after this one
        if conn is not self._conn:
            conn.fail(error)  # during the handshake: connect fails with the server's words
            return
        log.warning("server error from %s: %s", conn.server.address, message)
        self._report(error)

    def _report(self, error: BaseException) -> None:
        """An asynchronous error (slow consumer, -ERR, a failing callback) for ``error_cb``."""
        self.last_error = error
        if self._error_cb is None:
            if not isinstance(error, ServerError):
                log.warning("%s", error)
            return
        self._notify(self._error_cb, error)

    def _notify(self, callback: Callback | None, *args: Any) -> None:
        notify_soon(callback, self._tasks, *args)

    # -- connections -----------------------------------------------------------------------

    async def _open(self, server: Server) -> None:
        """Dial ``server``, handshake, resubscribe, send the pending buffer; raises OSError or NatsError."""
        conn = _Connection(self, server, self._max_payload_in)
        dial = self._dial or tcp_dial(server.host, server.port)
        try:
            async with asyncio.timeout(self._connect_timeout):
                await dial(lambda: conn)
                if conn.transport is None:
                    raise ConnectionLost("connection closed while connecting")
                info = await conn.info
                if server.tls or info.get("tls_required") or self._tls is not None:
                    await self._start_tls(conn, server)
                transport = conn.transport
                transport.set_write_buffer_limits(self._write_buffer)
                pong: asyncio.Future[None] = self._loop.create_future()
                conn.sent_ping(pong)
                transport.write(connect_op(self._connect_options(server, conn.tls)) + PING_OP)
                await pong
        except TimeoutError:
            self._abort(conn)
            raise TimeoutError(
                f"no NATS handshake with {server.address} within {self._connect_timeout} s"
            ) from None
        except BaseException:
            self._abort(conn)
            raise
        self.server_info = info
        self.max_payload = int(info.get("max_payload", MAX_PAYLOAD))
        if info.get("connect_urls"):
            self._pool.learn([str(url) for url in info["connect_urls"]])
        self._conn = conn
        # Resubscribe (with what is left of auto-unsubscribe limits), then what was published while away.
        ops = bytearray()
        for sid, target in self._subs.items():
            if isinstance(target, Subscription):
                ops += sub_op(
                    subject_bytes(target.subject), sid, queue_bytes(target.queue) if target.queue else b""
                )
                if target.max_msgs:
                    ops += unsub_op(sid, max(1, target.max_msgs - target.delivered))
            else:
                ops += sub_op(target.subject.encode(), sid)
        if ops:
            transport.write(bytes(ops))
        self._flush_out()
        self._start_pings(conn)
        self._wake_waiters()

    async def _start_tls(self, conn: _Connection, server: Server) -> None:
        """Upgrade the connection to TLS after the server's INFO, as NATS does; raises ConnectionError."""
        assert conn.transport is not None
        context = self._tls or ssl.create_default_context()
        hostname = self._tls_hostname or server.host
        try:
            upgraded = await self._loop.start_tls(conn.transport, conn, context, server_hostname=hostname)
        except (ssl.SSLError, ConnectionError) as exc:
            raise ConnectionError(f"TLS handshake with {server.address} failed: {exc}") from exc
        if upgraded is None:
            raise ConnectionLost(f"connection to {server.address} closed during the TLS handshake")
        conn.transport = upgraded
        conn.tls = True

    def _connect_options(self, server: Server, tls: bool) -> dict[str, Any]:
        options: dict[str, Any] = {
            "verbose": False,
            "pedantic": False,
            "tls_required": tls,
            "lang": "python-railcar",
            "version": "0.1.0",
            "protocol": 1,
            "headers": True,
            "no_responders": True,
        }
        if self._name:
            options["name"] = self._name
        if server.user and not server.password:
            options["auth_token"] = server.user  # nats://token@host
        elif server.user:
            options["user"], options["pass"] = server.user, server.password
        elif self._user:
            options["user"], options["pass"] = self._user, self._password or ""
        if self._token:
            options["auth_token"] = self._token
        return options

    @staticmethod
    def _abort(conn: _Connection) -> None:
        if conn.transport is not None and not conn.lost:
            conn.transport.abort()

    def _on_lost(self, conn: _Connection, error: BaseException) -> None:
        """The live connection ended: fail what it carried, then reconnect or close for good."""
        if conn is not self._conn:
            return  # a connection still in its handshake, or one already replaced
        self._conn = None
        self.last_error = error
        if conn.written > max(conn.confirmed, conn.reported):
            # Publishes went out after the last PONG and after every flush failed here: they may
            # be lost, and a flush begun later must not vouch for them.
            self._unconfirmed = ConnectionLost(
                f"the connection to {conn.server.address} was lost before the server confirmed "
                f"the publishes written to it, which may be lost ({error})"
            )
        self._stop_pings()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._requests is not None:
            self._requests.fail_all(error)
        log.warning("disconnected from %s: %s", conn.server.address, error)
        if self._closed:
            return
        if not self._policy.reconnect:
            self._closed = True
            self._failure = error
            self._end_everything(error)
            self._notify(self._policy.on_disconnect, error)
            self._notify(self._closed_cb)
            return
        self._notify(self._policy.on_disconnect, error)
        self._reconnecting = self._loop.create_task(self._reconnect(error))
        self._wake_waiters()

    async def _reconnect(self, error: BaseException) -> None:
        """Dial the pool's servers in turn until one takes; a server is dropped after max_reconnects failures.

        As nats.go counts them: attempts per server since it last took a connection, so a
        pool of N servers gives up after N × max_reconnects failures in a row at most.
        """
        attempts = 0
        while True:
            self._pool.drop_exhausted(self._policy.max_reconnects)
            if not self._pool.servers:
                break
            server = self._pool.next_server()
            wait = server.last_attempt + self._policy.pause() - self._loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            server.last_attempt = self._loop.time()
            server.reconnects += 1
            attempts += 1
            try:
                await self._open(server)
            except (OSError, NatsError, ProtocolError) as exc:  # ConnectionLost, TimeoutError: OSErrors
                log.info("reconnect attempt %d to %s failed: %s", attempts, server.address, exc)
                error = exc
                continue
            server.reconnects = 0
            self._reconnecting = None
            self.reconnects += 1
            log.info("reconnected to %s after %d attempts", server.address, attempts)
            self._notify(self._policy.on_reconnect)
            return
        self._reconnecting = None
        self._closed = True
        self._failure = ConnectionLost(
            f"gave up reconnecting after {attempts} attempts (max_reconnects="
            f"{self._policy.max_reconnects} per server); last error: {error}"
        )
        self._end_everything(self._failure)
        self._notify(self._closed_cb)

    async def _connect_first(self) -> None:
        """Try each server of the pool once, in order; raises the last failure."""
        last: BaseException | None = None
        for _ in range(len(self._pool.servers)):
            server = self._pool.next_server()
            server.last_attempt = self._loop.time()
            try:
                await self._open(server)
            except (OSError, NatsError, ProtocolError) as exc:
                log.info("could not connect to %s: %s", server.address, exc)
                last = exc
                continue
            return
        assert last is not None
        raise last

    # -- liveness --------------------------------------------------------------------------

    def _start_pings(self, conn: _Connection) -> None:
        self._stop_pings()
        if self._ping_interval > 0:
            self._ping_timer = self._loop.call_later(self._ping_interval, self._ping, conn)

    def _stop_pings(self) -> None:
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None

    def _ping(self, conn: _Connection) -> None:
        """Every ping_interval: a PING; past max_outstanding unanswered, the connection is rebuilt."""
        if conn is not self._conn or conn.transport is None:
            return
        if conn.outstanding >= self._max_outstanding:
            log.warning(
                "%s answered none of %d PINGs: rebuilding the connection",
                conn.server.address,
                conn.outstanding,
            )
            conn.abandoned = f"stale connection: the server answered none of {conn.outstanding} PINGs"
            conn.transport.abort()
            return
        conn.outstanding += 1
        self._write_now(PING_OP)
        conn.sent_ping(None)
        self._ping_timer = self._loop.call_later(self._ping_interval, self._ping, conn)


async def connect(
    servers: str | Sequence[str] = "nats://127.0.0.1:4222",
    *,
    name: str | None = None,
    user: str | None = None,
    password: str | None = None,
    token: str | None = None,
    dial: Dial | None = None,
    tls: ssl.SSLContext | None = None,
    tls_hostname: str | None = None,
    connect_timeout: float = 5.0,
    reconnect: bool = True,
    reconnect_wait: float = 2.0,
    max_reconnects: int | None = 60,
    randomize: bool = True,
    ping_interval: float = 120.0,
    max_outstanding_pings: int = 2,
    pending_size: int = 8 * 1024 * 1024,
    inbox_prefix: str = "_INBOX",
    write_buffer: int = 4 * 1024 * 1024,
    max_payload_in: int = MAX_PAYLOAD,
    max_in_flight: int = 100_000,
    on_disconnect: Callback | None = None,
    on_reconnect: Callback | None = None,
    error_cb: Callback | None = None,
    closed_cb: Callback | None = None,
) -> Client:
    """Connect to the first server of the pool that answers and return a client.

    Raises ValueError (bad URL or option), AuthorizationError or ServerError (the server
    refused the handshake), or OSError/TimeoutError when no server could be reached.
    ``dial`` replaces how every connection is opened (the servers' addresses are then only
    names).  A connection is upgraded to TLS after the server's INFO when the URL is
    ``tls://``, the server requires it, or ``tls`` (an ``ssl.SSLContext``) is given; without
    one the system's default context checks the server's certificate for ``tls_hostname``
    (default: the URL's host).  A failed TLS handshake raises ConnectionError saying why.
    A lost connection is rebuilt over the pool (given servers and those INFO
    advertises) every ``reconnect_wait`` s per server (less up to 20% jitter); a server that
    failed ``max_reconnects`` attempts since it last took a connection leaves the pool (as in
    nats.go; None: no limit), and the client closes when none is left.  Publishes made
    meanwhile are kept up to ``pending_size`` bytes.  At most ``max_in_flight`` requests
    wait for replies at once (``request`` raises InFlightLimit past it).
    """
    urls = [servers] if isinstance(servers, str) else list(servers)
    if (
        not connect_timeout > 0
        or ping_interval < 0
        or max_outstanding_pings < 1
        or pending_size < 0
        or max_in_flight < 1
    ):
        raise ValueError(
            "need connect_timeout > 0, ping_interval >= 0, max_outstanding_pings >= 1, pending_size >= 0, "
            "max_in_flight >= 1"
        )
    policy = ReconnectPolicy(reconnect, reconnect_wait, max_reconnects, on_disconnect, on_reconnect)
    client = Client(
        ServerPool(urls, randomize),
        name=name,
        user=user,
        password=password,
        token=token,
        dial=dial,
        tls=tls,
        tls_hostname=tls_hostname,
        policy=policy,
        connect_timeout=connect_timeout,
        ping_interval=ping_interval,
        max_outstanding_pings=max_outstanding_pings,
        pending_size=pending_size,
        inbox_prefix=inbox_prefix,
        write_buffer=write_buffer,
        max_payload_in=max_payload_in,
        max_in_flight=max_in_flight,
        error_cb=error_cb,
        closed_cb=closed_cb,
    )
    await client._connect_first()
    return client
