"""Async item services: a task per frame on the server's event loop, under a limit of requests in progress."""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from railcar.engine.api import Conn
from railcar.errors import CodecError
from railcar.proto.reqrep import Frame
from railcar.reqrep.answering import (
    Decoded,
    Session,
    decode_one_by_one,
    decode_requests,
    encode_replies,
    encode_results,
)

#: Requests of an async service in progress per connection before the server stops reading it.
DEFAULT_MAX_IN_PROGRESS = 10_000


@dataclass(slots=True)
class AsyncSession(Session):
    """A session of an async service: running tasks, frames waiting for room, requests in progress."""

    tasks: set[asyncio.Future[None]] = field(default_factory=set)  # the loop keeps only weak references
    waiting: deque[Frame] = field(default_factory=deque)
    in_progress: int = 0

    @property
    def busy(self) -> bool:
        """True while requests are in progress or waiting for room."""
        return self.in_progress > 0 or bool(self.waiting)


class AsyncAnswerer:
    """Answers REQUEST frames with an ``async def`` service, each frame in a task of its own.

    Replies go out per frame as they complete, out of order.  The tasks run on the loop
    given to ``run_on`` (the server's, from ``Handler.on_start``).
    """

    def __init__(self, service: Callable[[Any], Coroutine[Any, Any, Any]], max_in_progress: int) -> None:
        """Answer with ``service``, at most ``max_in_progress`` requests of a connection at a time."""
        self._service = service
        self._max_in_progress = max_in_progress
        self._loop: asyncio.AbstractEventLoop | None = None

    def run_on(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Run the service's tasks on ``loop`` from now on (None: no loop, nothing can run)."""
        self._loop = loop

    def start(self, conn: Conn, session: AsyncSession, frames: list[Frame]) -> None:
        """Queue ``frames`` and start what the limit allows; raises RuntimeError without a loop."""
        session.waiting.extend(frames)
        self._start_waiting(conn, session)

    @staticmethod
    def cancel(session: AsyncSession) -> None:
        """Drop the waiting frames and cancel the requests in progress: nobody is left to answer."""
        session.waiting.clear()
        for task in session.tasks:
            task.cancel()

    def _start_waiting(self, conn: Conn, session: AsyncSession) -> None:
        """Start waiting frames while their requests fit under the limit; read only while there is room.

        A frame is started whole, so one frame larger than the limit runs when it is alone.
        Pausing the connection's reading bounds its memory as output backpressure does: the
        frames of the last read wait here, and the rest stays in the kernel and with the peer.
        """
        loop = self._loop
        if loop is None:
            raise RuntimeError("an async service needs the server's event loop; the server has none")
        waiting, limit = session.waiting, self._max_in_progress
        while waiting and (not session.in_progress or session.in_progress + waiting[0].count <= limit):
            frame = waiting.popleft()
            session.in_progress += frame.count
            task = loop.create_task(self._answer(conn, session, frame))
            session.tasks.add(task)
            task.add_done_callback(functools.partial(self._finished, conn, session, frame.count))
        if waiting or session.in_progress >= limit:
            conn.pause_reading()
        else:
            conn.resume_reading()

    def _finished(self, conn: Conn, session: AsyncSession, count: int, task: asyncio.Future[None]) -> None:
        session.tasks.discard(task)
        session.in_progress -= count
        if not conn.closed:
            self._start_waiting(conn, session)

    async def _answer(self, conn: Conn, session: AsyncSession, frame: Frame) -> None:
        out = bytearray()
        decoded: Decoded | None
        try:
            requests = decode_requests(session.codec, frame)
        except CodecError:
            decoded = decode_one_by_one(session, frame, out)
        else:
            decoded = range(frame.first_id, frame.first_id + frame.count), requests, []
        if decoded is not None:
            ids, requests, errors = decoded
            results = await asyncio.gather(*map(self._service, requests), return_exceptions=True)
            if errors or any(isinstance(r, BaseException) for r in results):
                encode_results(session, ids, results, out, errors)
            else:
                encode_replies(session, frame, list(results), out)
        session.log_failed(conn.peer)
        if not conn.closed:
            conn.write(out)
