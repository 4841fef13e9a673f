"""When and how often a client dials again after losing its connection, and whom it tells."""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import queue
import random
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("railcar.client")

#: ``on_disconnect(error)`` or ``on_reconnect()``: a plain function, or one returning an awaitable.
Callback = Callable[..., Any]

#: Each pause is ``reconnect_wait`` less up to this share, so clients of one restarted server spread out.
JITTER = 0.2


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """Whether to reconnect, the pause between attempts, how many attempts in a row, and the callbacks.

    ``retry_on_failed_connect`` extends the same attempts to a first connection that fails:
    the client is returned at once and dials in the background (as nats-py's option does).
    """

    reconnect: bool = True
    reconnect_wait: float = 1.0
    max_reconnects: int | None = None
    on_disconnect: Callback | None = None
    on_reconnect: Callback | None = None
    retry_on_failed_connect: bool = False

    def __post_init__(self) -> None:
        """Raises ValueError for a negative or non-finite wait, or a negative attempt limit."""
        if not (self.reconnect_wait >= 0 and math.isfinite(self.reconnect_wait)):
            raise ValueError(f"need a finite reconnect_wait >= 0 (got {self.reconnect_wait})")
        if self.max_reconnects is not None and self.max_reconnects < 0:
            raise ValueError(f"need max_reconnects >= 0 or None (got {self.max_reconnects})")

    def pause(self) -> float:
        """Seconds to wait before the next attempt: ``reconnect_wait`` less up to 20% jitter."""
        return self.reconnect_wait * (1.0 - JITTER * random.random())

    def gave_up(self, attempts: int) -> bool:
        """True once ``attempts`` failed attempts in a row use up ``max_reconnects``."""
        return self.max_reconnects is not None and attempts >= self.max_reconnects


def notify(callback: Callback | None, *args: Any) -> Awaitable[Any] | None:
    """Call a connection callback; return what it returned if that must be awaited.

    A callback that raises is logged, never raised: the connection's life goes on.
    """
    if callback is None:
        return None
    try:
        result = callback(*args)
    except Exception:
        log.exception("connection callback %r failed", callback)
        return None
    return result if inspect.isawaitable(result) else None


def notify_soon(callback: Callback | None, tasks: set[asyncio.Future[Any]], *args: Any) -> None:
    """Call a connection callback from the event loop; an async one runs as a task kept in ``tasks``.

    The loop keeps only weak references to tasks, so ``tasks`` holds them until they end;
    a failure is logged, never raised.
    """
    awaitable = notify(callback, *args)
    if awaitable is None:
        return
    task = asyncio.ensure_future(awaitable)
    tasks.add(task)

    def done(task: asyncio.Future[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("connection callback failed", exc_info=task.exception())

    task.add_done_callback(done)


#: Callbacks a blocking client may have waiting to run; past it they are dropped with a warning.
MAX_WAITING_CALLBACKS = 64


class CallbackThread:
    """Runs a blocking client's connection callbacks, in order, on a thread of their own.

    Not on the client's I/O thread: a callback that calls the client (say, to warm a new
    connection) needs that thread to read the reply.  An async callback runs to its end
    in ``asyncio.run``.  The thread starts with the first callback and ends at ``close``.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._queue: queue.Queue[tuple[Callback, tuple[Any, ...]] | None] = queue.Queue(MAX_WAITING_CALLBACKS)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def notify(self, callback: Callback | None, *args: Any) -> None:
        """Queue ``callback(*args)``; logs and drops it if MAX_WAITING_CALLBACKS are still waiting."""
        if callback is None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            try:
                self._queue.put_nowait((callback, args))
            except queue.Full:
                log.warning(
                    "connection callback %r dropped: %d still waiting", callback, MAX_WAITING_CALLBACKS
                )

    def close(self) -> None:
        """Let the thread end once the callbacks queued so far have run; raises nothing."""
        with self._lock:
            if self._thread is not None:
                self._queue.put(None)  # blocks only while the queue is full of callbacks to run

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            callback, args = item
            awaitable = notify(callback, *args)
            if awaitable is not None:
                try:
                    asyncio.run(_awaited(awaitable))
                except Exception:
                    log.exception("connection callback %r failed", callback)


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
