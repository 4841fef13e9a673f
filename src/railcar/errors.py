"""Exceptions shared by every layer of railcar."""

from __future__ import annotations


class RailcarError(Exception):
    """Base class of every exception railcar raises on purpose."""


class EngineUnavailable(RailcarError):
    """The requested engine is unknown or cannot run here (e.g. uvloop is not installed)."""


class BindError(RailcarError, OSError):
    """The server could not listen on the requested address (in use, not permitted, unknown host)."""


class ConnectionClosed(RailcarError, ConnectionError):
    """An operation was attempted on a connection that is already closed or closing."""


class InboundOverflow(RailcarError):
    """A buffered (pull-mode) connection holds more unread bytes than its configured limit."""
