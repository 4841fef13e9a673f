"""NATS clients: ``await railcar.nats.connect(...)`` (asyncio) and ``railcar.nats.sync.connect(...)``."""

from __future__ import annotations

from railcar.errors import ConnectionLost, InFlightLimit, RequestTimeout
from railcar.nats.batches import batch_handler, call_array, call_batch
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
    SubscriptionClosed,
)
from railcar.nats.service import Service, ServiceError, add_service
from railcar.nats.subscription import Subscription
from railcar.proto.nats import Headers, InvalidHeader, InvalidSubject, Msg

__all__ = [
    "AuthorizationError",
    "BadHeaders",
    "Client",
    "ConnectionLost",
    "Headers",
    "InFlightLimit",
    "InvalidHeader",
    "InvalidSubject",
    "MaxPayloadExceeded",
    "Msg",
    "NatsError",
    "NoResponders",
    "OutboundBufferFull",
    "RequestTimeout",
    "ServerError",
    "Service",
    "ServiceError",
    "SlowConsumer",
    "Subscription",
    "SubscriptionClosed",
    "add_service",
    "batch_handler",
    "call_array",
    "call_batch",
    "connect",
]
