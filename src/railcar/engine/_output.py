"""A connection's queued output: what the kernel has not taken yet, sent as one gather write.

A readiness loop flushes it with ``sendmsg(queue.batch())`` when the socket turns
writable; a completion loop submits the same batch and calls ``consume`` with the
byte count its completion reports.  Either way the queue never copies a chunk
again once it holds it.
"""

from __future__ import annotations

import collections
from itertools import islice

from railcar.engine.api import Buffer

IOV_MAX = 1024  # buffers per sendmsg call (Linux UIO_MAXIOV)


class OutputQueue:
    """Chunks waiting to be sent, with their total size in bytes (``size``; 0 means empty)."""

    __slots__ = ("_chunks", "size")

    def __init__(self) -> None:
        self._chunks: collections.deque[bytes | memoryview] = collections.deque()
        self.size = 0

    def append(self, data: bytes | memoryview) -> None:
        """Queue one immutable chunk; empty chunks are dropped so that ``size == 0`` means empty."""
        if data:
            self._chunks.append(data)
            self.size += len(data)

    def batch(self) -> list[bytes | memoryview]:
        """Return the chunks one gather write should send (at most IOV_MAX of them)."""
        return list(islice(self._chunks, IOV_MAX))

    def consume(self, sent: int) -> None:
        """Drop the first ``sent`` bytes, which the kernel took."""
        self.size -= sent
        chunks = self._chunks
        while sent:
            head = chunks[0]
            if sent >= len(head):
                sent -= len(head)
                chunks.popleft()
            else:
                chunks[0] = memoryview(head)[sent:]
                sent = 0

    def clear(self) -> None:
        """Discard everything queued (the connection was aborted or lost)."""
        self._chunks.clear()
        self.size = 0


def unsent(chunks: list[Buffer], sent: int) -> list[Buffer]:
    """Return what remains of ``chunks`` after a gather write sent its first ``sent`` bytes."""
    for index, chunk in enumerate(chunks):
        size = len(chunk)
        if sent < size:
            return [memoryview(chunk)[sent:], *chunks[index + 1 :]]
        sent -= size
    return []
