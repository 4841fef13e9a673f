"""What every datagram engine shares: the size check, the counters, and drop logging that cannot flood.

An engine's endpoint subclasses ``CountingEndpoint``; on its receive path (inline:
it runs once per datagram) it checks the size against ``max_datagram`` (calling
``oversized`` past it), counts, calls the handler and ``handler_failed`` if that
raises; it implements ``send_to``, calling
``refuse_outgoing`` for a stopped endpoint or an oversized datagram and
``dropped``/``refused`` when a datagram cannot go.
"""

from __future__ import annotations

import logging
import time

from railcar.engine.api import (
    Address,
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

    def oversized(self, addr: Address) -> None:
        """Count and log a received datagram over ``max_datagram`` (dropped)."""
        self.stats.oversized += 1
        self._oversized(f"from {addr}")

    def handler_failed(self, addr: Address, exc: Exception) -> None:
        """Count and log an exception ``on_datagram`` raised (its datagram is lost)."""
        self.stats.handler_errors += 1
        self._failed(f"datagram from {addr}", exc)

    def refuse_outgoing(self, size: int) -> None:
        """Raise ConnectionClosed once stopped, ValueError for a datagram over ``max_datagram``.

        Engines call it only when ``closed`` or ``size > max_datagram``: the check
        itself stays inline on the send path.
        """
        if self._closed:
            raise ConnectionClosed("the datagram server has stopped")
        raise ValueError(f"a datagram of {size} bytes exceeds max_datagram ({self._max})")

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
