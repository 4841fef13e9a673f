"""The handler-error policy of every engine: a handler's exception is logged and ends only its connection.

Hot paths (one call per read) catch inline and call ``handler_failed``, so the
policy costs nothing until a handler raises; the rarer callbacks go through
``call_guarded`` and ``call_logged``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from railcar.engine.api import Conn, Handler

log = logging.getLogger("railcar.engine")


def handler_failed(conn: Conn, exc: BaseException) -> None:
    """Log an exception a handler raised for ``conn`` and abort that connection; raises nothing."""
    log.error("handler failed on connection %s; closing it", conn.peer, exc_info=exc)
    conn.abort()


def call_on_close(handler: Handler, conn: Conn, exc: BaseException | None) -> None:
    """Tell ``handler`` that ``conn`` is gone; what it raises is logged (nothing is left to close)."""
    try:
        handler.on_close(conn, exc)
    except Exception:
        log.exception("handler failed in on_close of connection %s", conn.peer)


def call_guarded(conn: Conn, callback: Callable[..., object], *args: object) -> object:
    """Call a handler callback for ``conn``; if it raises, apply ``handler_failed`` and return None."""
    try:
        return callback(*args)
    except Exception as exc:  # noqa: BLE001 - a handler bug closes only its connection
        handler_failed(conn, exc)
        return None


def call_logged(callback: Callable[[], object]) -> None:
    """Call something that concerns no single connection (on_start, a queued call); log if it raises."""
    try:
        callback()
    except Exception:
        log.exception("callback %r failed", callback)
