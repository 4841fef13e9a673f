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


class ProtocolError(RailcarError):
    """The peer sent bytes that break the wire protocol; the connection is closed."""


class RemoteError(RailcarError):
    """The server answered this request with an error (its message is the exception's text)."""


class RequestTimeout(RailcarError, TimeoutError):
    """No reply arrived within the timeout; a late reply is counted and dropped."""


class ConnectionLost(RailcarError, ConnectionError):
    """The connection ended before the reply arrived; every pending call fails with it."""


class InFlightLimit(RailcarError):
    """A non-waiting send found the client's in-flight window full."""


class CodecError(RailcarError, ValueError):
    """The bytes are not valid for this codec, or an item cannot be encoded by it."""


class FrameTooLarge(CodecError):
    """An item or frame is larger than the configured maximum."""


class BatcherClosed(RailcarError):
    """The batcher was closed and takes no more items."""


class QueueFull(RailcarError):
    """A bounded queue had no room for the item within the time allowed."""


def renewed(failure: BaseException) -> BaseException:
    """Return a fresh exception like ``failure``, for raising a stored failure again.

    Raising one instance over and over would grow its traceback without bound.
    """
    fresh = type(failure)(*failure.args)
    fresh.__cause__ = failure.__cause__
    return fresh


class WorkerStartError(RailcarError):
    """A worker process could not start serving (its handler factory or its listener failed)."""


class WorkersFailed(RailcarError):
    """Workers kept dying soon after each restart, so the supervisor gave up and stopped them all."""
