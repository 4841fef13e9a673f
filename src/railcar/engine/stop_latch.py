"""Waiting for a stop request that signal handlers and other threads can make, without a lock."""

from __future__ import annotations

import contextlib
import socket


class StopLatch:
    """Counts stop requests and wakes the one thread waiting for the first.

    ``threading.Event.set`` takes a lock: a second signal arriving while the first one's
    handler is inside ``set`` runs its handler in the same thread, which then waits for that
    lock forever (the process never exits).  A byte sent on a socket pair takes no lock.
    """

    def __init__(self) -> None:
        self.requests = 0
        self._waiting_end, self._waking_end = socket.socketpair()
        self._waking_end.setblocking(False)

    def request(self) -> None:
        """Count a stop request and wake the waiter; safe from a signal handler or any thread."""
        self.requests += 1
        with contextlib.suppress(OSError):  # full (the waiter has bytes to read) or closed (it is gone)
            self._waking_end.send(b"s")

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` s (None: for ever) for a request; True once one was made."""
        if not self.requests:
            self._waiting_end.settimeout(timeout)
            with contextlib.suppress(TimeoutError):
                self._waiting_end.recv(64)
        return self.requests > 0

    def close(self) -> None:
        """Release the socket pair; a request made after this only counts."""
        self._waiting_end.close()
        self._waking_end.close()
