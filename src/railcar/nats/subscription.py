"""Subscriptions: messages queued per subscription within pending limits, delivered to a callback or iterator.

The reader appends each message to its subscription's queue and never waits on the
subscriber.  A queue that would pass its limits (messages or bytes) drops the message and
raises a slow-consumer event (once per episode, with a count of every drop), never silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from railcar.nats.errors import SlowConsumer
from railcar.proto.nats import Msg

if TYPE_CHECKING:
    from railcar.nats.client import Client

log = logging.getLogger("railcar.nats")

#: Default pending limits per subscription, as in the Go client.
DEFAULT_PENDING_MSGS = 512 * 1024
DEFAULT_PENDING_BYTES = 64 * 1024 * 1024

MessageHandler = Callable[[Msg], Any]


class Subscription:
    """Interest in a subject; iterate it (``async for msg in sub``) or give ``subscribe`` a callback.

    ``pending_msgs``/``pending_bytes`` are what is queued now, ``delivered`` what the server
    sent, ``dropped`` what the pending limits refused.
    """

    def __init__(
        self,
        client: Client,
        sid: int,
        subject: str,
        queue: str,
        callback: MessageHandler | None,
        max_msgs: int,
        pending_msgs: int,
        pending_bytes: int,
    ) -> None:
        self._client = client
        self.sid = sid
        self.subject = subject
        self.queue = queue
        self.max_msgs = max_msgs
        self.limit_msgs = pending_msgs
        self.limit_bytes = pending_bytes
        self.delivered = 0
        self.dropped = 0
        self.pending_bytes = 0
        self.closed = False
        self._slow = False  # in a slow-consumer episode: reported once until the queue empties
        self._queue: deque[Msg] = deque()
        # Readers waiting for a message, each on its own future: one delivery wakes one of them.
        self._readers: deque[asyncio.Future[None]] = deque()
        self._callback = callback
        self._task: asyncio.Task[None] | None = None
        if callback is not None:
            self._task = asyncio.get_running_loop().create_task(self._run(callback))

    @property
    def pending_msgs(self) -> int:
        """Messages queued and not yet handed to the subscriber."""
        return len(self._queue)

    def deliver(self, msg: Msg) -> None:
        """Queue a message from the reader (never waits); over the limits it is dropped and reported."""
        self.delivered += 1
        if self.max_msgs and self.delivered >= self.max_msgs:
            if self.delivered > self.max_msgs:
                return  # sent before the server saw the UNSUB's limit
            self._client._forget(self)  # the server sends no more; the queue still drains
        size = len(msg[3])
        if len(self._queue) >= self.limit_msgs or self.pending_bytes + size > self.limit_bytes:
            self.dropped += 1
            if not self._slow:
                self._slow = True
                self._client._report(
                    SlowConsumer(
                        f"slow consumer on {self.subject!r} (sid {self.sid}): over its pending limits "
                        f"of {self.limit_msgs} messages / {self.limit_bytes} bytes; messages dropped",
                        self.subject,
                        self.sid,
                        self.dropped,
                    )
                )
            return
        self._queue.append(msg)
        self.pending_bytes += size
        if self._readers:
            self._wake_one()

    def _end(self) -> None:
        """No more messages will come: wake the iterator or the callback task so they finish."""
        self.closed = True
        readers, self._readers = self._readers, deque()
        for reader in readers:
            if not reader.done():
                reader.set_result(None)

    def _wake_one(self) -> None:
        readers = self._readers
        while readers:
            reader = readers.popleft()
            if not reader.done():  # a reader that timed out or was cancelled left it done
                reader.set_result(None)
                return

    async def _wait(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait until a message is queued or the subscription ends."""
        reader: asyncio.Future[None] = loop.create_future()
        self._readers.append(reader)
        try:
            await reader
        except asyncio.CancelledError:
            if reader.cancelled():  # gave up waiting (a timeout): leave no future behind
                with contextlib.suppress(ValueError):
                    self._readers.remove(reader)
            else:  # woken for a message, then cancelled before taking it: pass the wake-up on
                self._wake_one()
            raise

    def _take(self) -> Msg:
        msg = self._queue.popleft()
        self.pending_bytes -= len(msg[3])
        if not self._queue:
            self._slow = False
        return msg

    async def _run(self, callback: MessageHandler) -> None:
        """The callback's task: one message at a time, in order; a failing callback is reported, not fatal."""
        loop = asyncio.get_running_loop()
        while True:
            while self._queue:
                msg = self._take()
                try:
                    result = callback(msg)
                    if inspect.isawaitable(result):
                        await result
                except Exception as exc:
                    log.exception("subscription callback for %r failed", self.subject)
                    self._client._report(exc)
            if self.closed:
                return
            await self._wait(loop)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Msg:
        """The next message; the iteration stops once the subscription ended and its queue is empty."""
        if self._callback is not None:
            raise TypeError("a subscription with a callback cannot be iterated")
        while not self._queue:
            if self.closed:
                raise StopAsyncIteration
            await self._wait(asyncio.get_running_loop())
        return self._take()

    async def next_msg(self, timeout: float | None = None) -> Msg:
        """The next message; raises TimeoutError after ``timeout`` s, StopAsyncIteration once ended."""
        return await asyncio.wait_for(self.__anext__(), timeout)

    async def unsubscribe(self, after: int = 0) -> None:
        """Stop now, or after ``after`` messages in all (counting those delivered); raises nothing."""
        await self._client._unsubscribe(self, after)

    async def drain(self, timeout: float = 30.0) -> None:
        """Unsubscribe, let the server's messages in flight arrive, and wait until they are handled."""
        await self._client._drain_sub(self, timeout)

    async def _idle(self) -> None:
        """Return once the queue is empty and the callback (if any) has finished."""
        if self._task is not None:
            self._end()
            await asyncio.shield(self._task)
            return
        while self._queue:
            await asyncio.sleep(0.005)
