"""The exceptions the NATS client raises (besides RequestTimeout and ConnectionLost from railcar.errors)."""

from __future__ import annotations

from railcar.errors import RailcarError


class NatsError(RailcarError):
    """Base class of the NATS client's own exceptions."""


#: How the -ERR messages after which the server keeps the connection open begin (lower case).
_NON_FATAL = ("permissions violation", "invalid subject", "invalid publish subject")


class ServerError(NatsError):
    """The server sent -ERR; the exception's text is the server's message."""

    @property
    def fatal(self) -> bool:
        """Whether the server closes the connection after it: all but permission and subject errors."""
        return not str(self).lower().startswith(_NON_FATAL)


class AuthorizationError(ServerError, ConnectionError):
    """The server refused the credentials ('Authorization Violation')."""


class NoResponders(NatsError):
    """A request reached no subscriber: the server answered at once with status 503."""


class MaxPayloadExceeded(NatsError, ValueError):
    """A message is larger than the server's max_payload; it was not sent."""


class SlowConsumer(NatsError):
    """A subscription's pending limit was reached and messages were dropped (counted in ``dropped``)."""

    def __init__(self, message: str, subject: str = "", sid: int = 0, dropped: int = 0) -> None:
        super().__init__(message)
        self.subject = subject
        self.sid = sid
        self.dropped = dropped


class BadHeaders(NatsError):
    """A message arrived with a malformed header block and was dropped (the connection goes on)."""

    def __init__(self, message: str, subject: str = "", sid: int = 0) -> None:
        super().__init__(message)
        self.subject = subject
        self.sid = sid


class OutboundBufferFull(NatsError):
    """Publishing while disconnected would pass the bound of the pending buffer; nothing was queued."""


class SubscriptionClosed(NatsError):
    """The subscription ended (unsubscribed, its max_msgs reached, or the client closed) and is empty."""
