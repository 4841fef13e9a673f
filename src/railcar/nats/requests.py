"""Request/reply over one wildcard inbox subscription: a token per request mapped to its waiter, sans I/O."""

from __future__ import annotations

from typing import Final

from railcar.clientcore.waiter import Waiter
from railcar.errors import RequestTimeout, renewed
from railcar.nats.errors import NoResponders
from railcar.nats.nuid import Nuid
from railcar.proto.nats import NO_RESPONDERS, Msg

_DIGITS: Final = "0123456789abcdefghijklmnopqrstuvwxyz"


class RequestTable:
    """Tokens → waiters for one ``_INBOX.<nuid>.*`` subscription.

    ``deliver`` is what the reader calls for a message on the inbox: it settles the
    request its token names (a 503 status settles it with NoResponders); a reply for a
    token no longer waiting (timed out, cancelled) is counted in ``late_replies``.
    """

    def __init__(self, inbox_prefix: str = "_INBOX") -> None:
        self.prefix = f"{inbox_prefix}.{Nuid().next().decode()}"
        self.subject = self.prefix + ".*"
        self._cut = len(self.prefix) + 1
        self._prefix_bytes = self.prefix.encode() + b"."
        self._waiters: dict[bytes, tuple[Waiter, str]] = {}
        self._next = 0
        self.late_replies = 0
        self.sid = 0  # the inbox subscription's sid, once made

    def __len__(self) -> int:
        return len(self._waiters)

    def new(self, waiter: Waiter, subject: str) -> bytes:
        """Register the waiter of a request on ``subject`` and return the reply subject it carries."""
        self._next += 1
        number = self._next
        token = ""
        while number:
            number, digit = divmod(number, 36)
            token = _DIGITS[digit] + token
        raw = token.encode()
        self._waiters[raw] = (waiter, subject)
        return self._prefix_bytes + raw

    def deliver(self, msg: Msg) -> None:
        """Settle the request that ``msg`` answers."""
        entry = self._waiters.pop(msg[0][self._cut :], None)
        if entry is None or entry[0].done():
            self.late_replies += 1
            return
        waiter, subject = entry
        headers = msg[4]
        if headers is not None and headers.status == NO_RESPONDERS and not msg[3]:
            waiter.set_exception(NoResponders(f"no responders on {subject!r}"))
            return
        waiter.set_result(msg)

    def forget(self, reply: bytes) -> None:
        """Drop a request that stopped waiting (timed out, cancelled, never sent)."""
        self._waiters.pop(reply[len(self._prefix_bytes) :], None)

    def expire(self, reply: bytes, timeout: float) -> None:
        """Fail a request whose time ran out with RequestTimeout."""
        entry = self._waiters.pop(reply[len(self._prefix_bytes) :], None)
        if entry is not None and not entry[0].done():
            entry[0].set_exception(RequestTimeout(f"no reply on {entry[1]!r} within {timeout} s"))

    def fail_all(self, error: BaseException) -> None:
        """Fail every waiting request with ``error`` (a lost connection, close)."""
        waiters, self._waiters = self._waiters, {}
        for waiter, _ in waiters.values():
            if not waiter.done():
                waiter.set_exception(renewed(error))  # one instance raised by many would grow its traceback
