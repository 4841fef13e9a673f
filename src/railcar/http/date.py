"""The Date header line, formatted once a second rather than once a response."""

from __future__ import annotations

import time
from email.utils import formatdate


class DateLine:
    """The ``Date: <IMF-fixdate>`` line, with its CRLF, for the current second (RFC 9110 6.6.1)."""

    __slots__ = ("_line", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._line = b""

    def get(self) -> bytes:
        """The whole header line for now, reformatted only when the second changed."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._line = b"Date: %s\r\n" % formatdate(second, usegmt=True).encode("ascii")
            self._second = second
        return self._line
