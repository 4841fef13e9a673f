"""What every datagram engine shares: the size check, the counters, and drop logging that cannot flood.

An engine's endpoint subclasses ``CountingEndpoint``, calls ``deliver`` with each
datagram it receives and implements ``send_to`` with ``check_outgoing`` first and
``dropped``/``refused`` when a datagram cannot go.
"""

from __future__ import annotations

import logging
import time

from railcar.engine.api import (
    Address,
    Buffer,
    DatagramEndpoint,
    DatagramHandler,
    DatagramOptions,
    DatagramStats,
)
from railcar.errors import ConnectionClosed

log = logging.getLogger("railcar.engine.datagram")

LOG_INTERVAL = 1.0  # seconds between two log lines about the same kind of drop


class RateLimitedLog:
    """Logs a recurring event at most once per interval, saying how many happened since the last line.

    A flood of bad datagrams (or a sender outrunning the network) must not become a
    flood of log lines: that would cost more than the datagrams themselves.
    """

    __slots__ = ("_interval", "_message", "_next_at", "_since")

    def __init__(self, message: str, interval: float = LOG_INTERVAL) -> None:
        self._message = message
        self._interval = interval
        self._next_at = 0.0
        self._since = 0

    def __call__(self, detail: str, exc: BaseException | None = None) -> None:
        """Count one occurrence; log it (with the count since the last line) if the interval has passed."""
        self._since += 1
        now = time.monotonic()
        if now < self._next_at:
            return
        log.warning("%s: %s (%d since the last report)", self._message, detail, self._since, exc_info=exc)
        self._since = 0
        self._next_at = now + self._interval


class CountingEndpoint(DatagramEndpoint):
    """An endpoint that checks sizes, counts, and guards the handler; engines add the socket work."""

    __slots__ = (
        "_closed",
        "_dropped",
        "_failed",
        "_handler",
        "_max",
        "_on_datagram",
        "_oversized",
        "_refused",
    )

    def __init__(
        self, local: Address, stats: DatagramStats, handler: DatagramHandler, options: DatagramOptions
    ) -> None:
        super().__init__(local, stats)
        self._handler = handler
        self._on_datagram = handler.on_datagram
        self._max = options.max_datagram
        self._closed = False
        self._oversized = RateLimitedLog(f"datagrams over {options.max_datagram} bytes dropped")
        self._dropped = RateLimitedLog(f"send queue full ({options.send_queue} bytes): datagrams dropped")
        self._refused = RateLimitedLog("datagrams the kernel refused to send")
        self._failed = RateLimitedLog("on_datagram raised")

    @property
    def closed(self) -> bool:
        """True once the server stopped serving on this endpoint."""
        return self._closed

    def deliver(self, addr: Address, data: Buffer, size: int) -> None:
        """Hand a received datagram of ``size`` bytes to the handler, or count and drop it if oversized.

        An engine that reads into a buffer one byte larger than ``max_datagram`` passes
        the byte count read: a datagram the buffer cut short shows as one byte too many.
        """
        stats = self.stats
        if size > self._max:
            stats.oversized += 1
            self._oversized(f"from {addr}")
            return
        stats.received += 1
        try:
            self._on_datagram(self, addr, data)
        except Exception as exc:  # noqa: BLE001 - a handler bug loses only its datagram
            stats.handler_errors += 1
            self._failed(f"datagram from {addr}", exc)

    def check_outgoing(self, data: Buffer) -> int:
        """Return the size of a datagram about to be sent; raises ConnectionClosed or ValueError."""
        if self._closed:
            raise ConnectionClosed("the datagram server has stopped")
        size = data.nbytes if isinstance(data, memoryview) else len(data)
        if size > self._max:
            raise ValueError(f"a datagram of {size} bytes exceeds max_datagram ({self._max})")
        return size

    def dropped(self, addr: Address) -> bool:
        """Count a datagram dropped because the send queue is full; returns False (not sent)."""
        self.stats.send_dropped += 1
        self._dropped(f"to {addr}")
        return False

    def refused(self, addr: Address, exc: OSError) -> bool:
        """Count a datagram the kernel refused; returns False (not sent)."""
        self.stats.send_errors += 1
        self._refused(f"to {addr}: {exc.strerror or exc}")
        return False
