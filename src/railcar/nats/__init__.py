"""An asyncio NATS client: ``nc = await railcar.nats.connect(["nats://127.0.0.1:4222"])``."""

from __future__ import annotations

from railcar.errors import ConnectionLost, RequestTimeout
from railcar.nats.client import Client, connect
from railcar.nats.errors import (
    AuthorizationError,
    BadHeaders,
    MaxPayloadExceeded,
    NatsError,
    NoResponders,
    OutboundBufferFull,
    ServerError,
    SlowConsumer,
)
from railcar.nats.subscription import Subscription
from railcar.proto.nats import Headers, InvalidHeader, InvalidSubject, Msg

__all__ = [
    "AuthorizationError",
    "BadHeaders",
    "Client",
    "ConnectionLost",
    "Headers",
    "InvalidHeader",
    "InvalidSubject",
    "MaxPayloadExceeded",
    "Msg",
    "NatsError",
    "NoResponders",
    "OutboundBufferFull",
    "RequestTimeout",
    "ServerError",
    "SlowConsumer",
    "Subscription",
    "connect",
]
