"""The blocking NATS client: ``nc = railcar.nats.sync.connect(...)``, safe from many threads, no async code.

It is the asyncio client (``nats/client.py``: the parser, the one flusher, subscriptions,
the request table, reconnection, liveness) driven by one I/O thread that runs its event
loop, so the blocking face and the asyncio one share every rule and timeout.  Callers hand
work to that thread:

- ``publish`` encodes and checks the message in the caller's thread and appends it to a
  hand-off list bounded by ``handoff_size`` bytes (a caller waits for room past it); the
  first caller to find no transfer scheduled schedules one, so the publishes of many
  threads reach the I/O thread with one wake-up and leave in one write.  While the client
  is disconnected a publish goes through the I/O thread at once, so the pending buffer's
  bound (``OutboundBufferFull``) is raised in the caller.
- ``flush``, ``request``, ``subscribe`` and ``close`` run on the I/O thread after moving
  what is in the hand-off, so the server sees operations in the order they were made.
- A subscription is the asyncio one (same pending limits and slow-consumer events); a
  thread takes its messages with ``next_msg(timeout)`` or by iterating.

Callbacks (``error_cb``, ``on_disconnect``, ``on_reconnect``, ``closed_cb``) run on the
I/O thread and must not call back into this client's blocking methods.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from railcar.errors import ConnectionLost
from railcar.nats.client import Client, HeadersArg
from railcar.nats.client import connect as async_connect
from railcar.nats.errors import MaxPayloadExceeded, OutboundBufferFull, SubscriptionClosed
from railcar.nats.subscription import DEFAULT_PENDING_BYTES, DEFAULT_PENDING_MSGS, Subscription
from railcar.proto.nats import Msg, header_block, hpub_op, pub_op, subject_bytes

log = logging.getLogger("railcar.nats")

T = TypeVar("T")

#: Default bound of the hand-off list of publishes waiting for the I/O thread, in bytes.
DEFAULT_HANDOFF_SIZE = 4 * 1024 * 1024


def _new_loop() -> asyncio.AbstractEventLoop:
    """A new uvloop loop where uvloop is installed (the fastest here), else an asyncio one."""
    try:
        import uvloop  # noqa: PLC0415 - optional

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


class SyncSubscription:
    """A subscription read from threads: ``next_msg(timeout)`` or ``for msg in sub``."""

    def __init__(self, client: SyncClient, sub: Subscription) -> None:
        self._client = client
        self._sub = sub
        self._readers = threading.Lock()  # one reader at a time takes the next message

    @property
    def subject(self) -> str:
        """The subject subscribed to."""
        return self._sub.subject

    @property
    def delivered(self) -> int:
        """Messages the server sent this subscription."""
        return self._sub.delivered

    @property
    def dropped(self) -> int:
        """Messages refused by the pending limits (each episode reported as SlowConsumer)."""
        return self._sub.dropped

    @property
    def pending_msgs(self) -> int:
        """Messages queued and not yet taken."""
        return self._sub.pending_msgs

    def next_msg(self, timeout: float | None = None) -> Msg:
        """The next message; raises TimeoutError after ``timeout`` s, SubscriptionClosed once it ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._readers.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            raise TimeoutError(f"no message on {self.subject!r} within {timeout} s")
        try:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return self._client._run(self._sub.next_msg(remaining))
            except StopAsyncIteration:
                raise SubscriptionClosed(f"subscription to {self.subject!r} ended") from None
        finally:
            self._readers.release()

    def __iter__(self) -> Iterator[Msg]:
        """Every message until the subscription ends (unsubscribed, max_msgs reached, client closed)."""
        while True:
            try:
                yield self.next_msg()
            except SubscriptionClosed:
                return

    def unsubscribe(self, after: int = 0) -> None:
        """Stop now, or after ``after`` messages in all; raises ConnectionLost once the client closed."""
        self._client._run(self._sub.unsubscribe(after))

    def drain(self, timeout: float = 30.0) -> None:
        """Unsubscribe and wait until the messages in flight have arrived; raises TimeoutError."""
        self._client._run(self._sub.drain(timeout))


class SyncClient:
    """A NATS connection for threads; make one with ``railcar.nats.sync.connect(...)``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, thread: threading.Thread, handoff_size: int) -> None:
        self._loop = loop
        self._thread = thread
        self._client: Client | None = None
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._handoff: list[bytes] = []
        self._handoff_bytes = 0
        self._handoff_size = handoff_size
        self._moving = False  # a transfer to the I/O thread is scheduled
        self._dropped = 0  # publishes refused by the pending buffer after they were handed off
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def client(self) -> Client:
        """The asyncio client the I/O thread drives (use it only from that thread)."""
        assert self._client is not None
        return self._client

    @property
    def connected(self) -> bool:
        """True while a connection is up."""
        return self.client.connected

    @property
    def closed(self) -> bool:
        """True once closed for good."""
        return self._closed or self.client.closed

    @property
    def max_payload(self) -> int:
        """The server's max_payload (from INFO)."""
        return self.client.max_payload

    # -- running things on the I/O thread --------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the I/O thread after the hand-off; return its result or raise its exception."""
        if self._closed or not self._thread.is_alive():
            coro.close()
            raise ConnectionLost("client closed")
        future = asyncio.run_coroutine_threadsafe(self._after_handoff(coro), self._loop)
        # Waited in slices: a call submitted as close() stops the loop would otherwise wait forever.
        while not concurrent.futures.wait([future], 0.5).done:
            if not self._thread.is_alive():
                future.cancel()
                raise ConnectionLost("client closed")
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise ConnectionLost("client closed") from None

    async def _after_handoff(self, coro: Coroutine[Any, Any, T]) -> T:
        self._move()
        return await coro

    # -- publishing ------------------------------------------------------------------------

    def publish(
        self,
        subject: str,
        payload: bytes | bytearray | memoryview = b"",
        reply: str = "",
        headers: HeadersArg = None,
    ) -> None:
        """Queue a message (waits only while the hand-off is full).

        Raises InvalidSubject, InvalidHeader, MaxPayloadExceeded, OutboundBufferFull (while
        reconnecting, the pending buffer is full) and ConnectionLost once closed.
        """
        client = self.client
        if self._closed or client.closed:
            raise ConnectionLost("client closed")
        if not client.connected:
            self._run(client.publish(subject, payload, reply, headers))
            return
        data = payload if isinstance(payload, bytes) else bytes(payload)
        subj = subject_bytes(subject)
        reply_b = subject_bytes(reply, "reply subject") if reply else b""
        if headers:
            block = header_block(headers)
            size = len(block) + len(data)
            op = hpub_op(subj, block, data, reply_b)
        else:
            size = len(data)
            op = pub_op(subj, data, reply_b)
        if size > client.max_payload:
            raise MaxPayloadExceeded(
                f"message of {size} bytes is over the server's max_payload of {client.max_payload}"
            )
        with self._lock:
            while self._handoff_bytes and self._handoff_bytes + len(op) > self._handoff_size:
                if self._closed:
                    raise ConnectionLost("client closed")
                self._room.wait(0.1)  # woken by each transfer; the timeout re-checks closing
            self._handoff.append(op)
            self._handoff_bytes += len(op)
            schedule = not self._moving
            self._moving = True
        if schedule:
            self._loop.call_soon_threadsafe(self._start_pump)

    def _start_pump(self) -> None:
        task = self._loop.create_task(self._pump())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pump(self) -> None:
        """Move hand-offs into the client until none is left, waiting while the transport is full."""
        client = self.client
        while self._move():
            conn = client._conn
            if conn is not None and conn.paused:
                try:
                    await client._ready(None, None)
                except ConnectionLost:
                    return  # closed: close() takes what is left

    def _move(self) -> bool:
        """On the I/O thread: hand what callers queued to the client's flusher; False when nothing was."""
        with self._lock:
            batch = self._handoff
            if not batch:
                self._moving = False
                return False
            self._handoff = []
            self._handoff_bytes = 0
            self._room.notify_all()
        client = self.client
        client._pub_queued = True
        for op in batch:
            try:
                client._queue_out(op)
            except OutboundBufferFull:
                # The connection went away after the publish was handed off: the next flush says so.
                self._dropped += 1
        if self._dropped:
            log.warning(
                "%d publishes dropped: the connection was lost and the pending buffer is full", self._dropped
            )
        return True

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until the server processed everything published before; raises RequestTimeout, ConnectionLost.

        Also raises OutboundBufferFull when publishes handed off since the last flush were
        dropped because the connection was lost and the pending buffer was full.
        """
        self._run(self._flush(timeout))

    async def _flush(self, timeout: float) -> None:
        dropped, self._dropped = self._dropped, 0
        if dropped:
            raise OutboundBufferFull(
                f"{dropped} publishes were dropped while reconnecting (the pending buffer was full)"
            )
        await self.client.flush(timeout)

    # -- subscribing and requests ----------------------------------------------------------

    def subscribe(
        self,
        subject: str,
        queue: str = "",
        *,
        max_msgs: int = 0,
        pending_msgs: int = DEFAULT_PENDING_MSGS,
        pending_bytes: int = DEFAULT_PENDING_BYTES,
    ) -> SyncSubscription:
        """Subscribe (in a queue group if ``queue``); raises InvalidSubject, ValueError or ConnectionLost."""
        sub = self._run(
            self.client.subscribe(
                subject, queue, max_msgs=max_msgs, pending_msgs=pending_msgs, pending_bytes=pending_bytes
            )
        )
        return SyncSubscription(self, sub)

    def request(
        self,
        subject: str,
        payload: bytes | bytearray | memoryview = b"",
        timeout: float = 2.0,
        headers: HeadersArg = None,
    ) -> Msg:
        """Send a request and return the first reply; raises NoResponders, RequestTimeout, ConnectionLost."""
        return self._run(self.client.request(subject, payload, timeout, headers))

    def request_many(
        self,
        subject: str,
        payload: bytes | bytearray | memoryview = b"",
        timeout: float = 2.0,
        max_msgs: int = 0,
    ) -> list[Msg]:
        """Gather replies until ``max_msgs`` or the timeout; raises NoResponders, ConnectionLost."""
        return self._run(self.client.request_many(subject, payload, timeout, max_msgs))

    # -- closing ---------------------------------------------------------------------------

    def close(self, deadline: float = 5.0) -> None:
        """Write what is queued, fail what waits, stop the I/O thread; raises nothing."""
        if self._closed:
            return
        with contextlib.suppress(ConnectionLost):
            self._run(self.client.close(deadline))
        with self._lock:
            self._closed = True
            self._room.notify_all()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(deadline + 5.0)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> SyncClient:
        """Use as ``with railcar.nats.sync.connect(...) as nc``."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the client."""
        self.close()


def connect(
    servers: str | Sequence[str] = "nats://127.0.0.1:4222",
    *,
    handoff_size: int = DEFAULT_HANDOFF_SIZE,
    **options: Any,
) -> SyncClient:
    """Start the I/O thread and connect; ``options`` are ``railcar.nats.connect``'s.

    Raises what ``railcar.nats.connect`` raises (ValueError, AuthorizationError,
    ServerError, OSError/TimeoutError), ValueError for ``handoff_size`` < 1.
    """
    if handoff_size < 1:
        raise ValueError(f"need handoff_size >= 1 (got {handoff_size})")
    loop = _new_loop()
    thread = threading.Thread(target=loop.run_forever, name="railcar-nats-io", daemon=True)
    thread.start()
    client = SyncClient(loop, thread, handoff_size)
    try:
        client._client = asyncio.run_coroutine_threadsafe(async_connect(servers, **options), loop).result()
    except BaseException:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
        raise
    return client
