"""Services on NATS that its tooling can find: endpoints in queue groups, and the ``$SRV`` protocol.

A service answers requests on its endpoints' subjects (in queue group ``q`` by default, so
instances spread the load and each request is answered once) and, like the services of
nats.go's ``micro`` package and nats-py's ``nats.micro``, answers ``$SRV.PING``,
``$SRV.INFO`` and ``$SRV.STATS`` (for all services, one name, or one instance) so
existing NATS tools list it and its figures.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from railcar.errors import ConnectionLost, RequestTimeout
from railcar.nats.client import Client
from railcar.nats.nuid import Nuid
from railcar.nats.subscription import Subscription
from railcar.proto.nats import Msg, header_block, queue_bytes, subject_bytes

log = logging.getLogger("railcar.nats")

PREFIX = "$SRV"
QUEUE_GROUP = "q"
ERROR_HEADER = "Nats-Service-Error"
ERROR_CODE_HEADER = "Nats-Service-Error-Code"

_NAME = re.compile(r"^[A-Za-z0-9\-_]+$")
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)

#: An endpoint's handler: the request in, the reply's bytes out (or an awaitable of them).
EndpointHandler = Callable[[Msg], bytes | Awaitable[bytes]]


class ServiceError(Exception):
    """Raised by a handler to answer with an error: the ``Nats-Service-Error`` headers, empty body."""

    def __init__(self, code: int, description: str) -> None:
        super().__init__(f"{code} {description}")
        self.code = code
        self.description = description


@dataclass
class Endpoint:
    """One endpoint: where it listens and what it has done."""

    name: str
    subject: str
    queue_group: str
    handler: EndpointHandler
    metadata: dict[str, str] = field(default_factory=dict)
    reply_headers: dict[str, str] = field(default_factory=dict)  # added to every reply
    num_requests: int = 0
    num_errors: int = 0
    last_error: str = ""
    processing_time: int = 0  # nanoseconds, all requests
    subscription: Subscription | None = None

    def info(self) -> dict[str, Any]:
        """The endpoint as ``$SRV.INFO`` describes it."""
        return {
            "name": self.name,
            "subject": self.subject,
            "queue_group": self.queue_group,
            "metadata": self.metadata,
        }

    def stats(self) -> dict[str, Any]:
        """The endpoint's figures as ``$SRV.STATS`` reports them (times in nanoseconds)."""
        average = self.processing_time // self.num_requests if self.num_requests else 0
        return {
            **self.info(),
            "num_requests": self.num_requests,
            "num_errors": self.num_errors,
            "last_error": self.last_error,
            "processing_time": self.processing_time,
            "average_processing_time": average,
            "data": None,
        }


class Service:
    """A running service; make one with ``await add_service(nc, name, version)``."""

    def __init__(
        self, client: Client, name: str, version: str, description: str, metadata: Mapping[str, str]
    ) -> None:
        self.client = client
        self.name = name
        self.version = version
        self.description = description
        self.metadata = dict(metadata)
        self.id = Nuid().next().decode()  # unique per instance
        self.started = datetime.now(UTC)
        self.endpoints: list[Endpoint] = []
        self._control: list[Subscription] = []

    async def add_endpoint(
        self,
        name: str,
        handler: EndpointHandler,
        *,
        subject: str | None = None,
        queue_group: str = QUEUE_GROUP,
        metadata: Mapping[str, str] | None = None,
        reply_headers: Mapping[str, str] | None = None,
    ) -> Endpoint:
        """Serve ``handler`` on ``subject`` (default: ``name``); raises ValueError, InvalidSubject/Header.

        ``reply_headers`` go with every reply (say, which instance answered).
        """
        if not _NAME.match(name):
            raise ValueError(f"invalid endpoint name {name!r}: use letters, digits, '-' and '_'")
        endpoint = Endpoint(
            name, subject or name, queue_group, handler, dict(metadata or {}), dict(reply_headers or {})
        )
        subject_bytes(endpoint.subject)
        queue_bytes(queue_group)
        header_block(endpoint.reply_headers)  # checked here, not at the first reply
        endpoint.subscription = await self.client.subscribe(
            endpoint.subject, queue_group, cb=partial(self._handle, endpoint)
        )
        self.endpoints.append(endpoint)
        return endpoint

    async def stop(self, timeout: float = 2.0) -> None:
        """Stop answering (endpoints first, then the ``$SRV`` subjects); raises nothing.

        Returns once the server has the unsubscriptions (or after ``timeout`` s without its
        answer): from then on a request to the service finds no responders instead of a
        subscription that drops it.
        """
        for subscription in [endpoint.subscription for endpoint in self.endpoints] + self._control:
            if subscription is not None and not subscription.closed:
                await subscription.unsubscribe()
        with contextlib.suppress(RequestTimeout, ConnectionLost):
            await self.client.flush(timeout)

    async def __aenter__(self) -> Service:
        """Use as ``async with await add_service(...) as service``."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Stop the service."""
        await self.stop()

    def ping(self) -> dict[str, Any]:
        """The ``$SRV.PING`` response."""
        return {"type": "io.nats.micro.v1.ping_response", **self._identity()}

    def info(self) -> dict[str, Any]:
        """The ``$SRV.INFO`` response."""
        return {
            "type": "io.nats.micro.v1.info_response",
            **self._identity(),
            "description": self.description,
            "endpoints": [endpoint.info() for endpoint in self.endpoints],
        }

    def stats(self) -> dict[str, Any]:
        """The ``$SRV.STATS`` response."""
        started = self.started.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        return {
            "type": "io.nats.micro.v1.stats_response",
            **self._identity(),
            "started": started,
            "endpoints": [endpoint.stats() for endpoint in self.endpoints],
        }

    def _identity(self) -> dict[str, Any]:
        return {"name": self.name, "id": self.id, "version": self.version, "metadata": self.metadata}

    async def _start_control(self) -> None:
        answers: dict[str, Callable[[], dict[str, Any]]] = {
            "PING": self.ping,
            "INFO": self.info,
            "STATS": self.stats,
        }
        for verb, answer in answers.items():
            for subject in (
                f"{PREFIX}.{verb}",
                f"{PREFIX}.{verb}.{self.name}",
                f"{PREFIX}.{verb}.{self.name}.{self.id}",
            ):
                self._control.append(
                    await self.client.subscribe(subject, cb=partial(self._answer_control, answer))
                )

    async def _answer_control(self, answer: Callable[[], dict[str, Any]], msg: Msg) -> None:
        if msg.reply:
            await self.client.publish(msg.reply, json.dumps(answer()).encode())

    async def _handle(self, endpoint: Endpoint, msg: Msg) -> None:
        started = time.perf_counter_ns()
        endpoint.num_requests += 1
        headers: dict[str, str] | None = endpoint.reply_headers or None
        error: dict[str, str] | None = None
        try:
            reply = endpoint.handler(msg)
            if inspect.isawaitable(reply):
                reply = await reply
        except ServiceError as exc:
            reply, error = b"", {ERROR_HEADER: exc.description, ERROR_CODE_HEADER: str(exc.code)}
        except Exception as exc:  # a handler bug is answered and counted, never fatal
            log.exception("service %s endpoint %s failed", self.name, endpoint.name)
            reply, error = b"", {ERROR_HEADER: f"{type(exc).__name__}: {exc}", ERROR_CODE_HEADER: "500"}
        if error is not None:
            endpoint.num_errors += 1
            endpoint.last_error = f"{error[ERROR_CODE_HEADER]}:{error[ERROR_HEADER]}"
            headers = {**endpoint.reply_headers, **error}
        if msg.reply:
            await self.client.publish(msg.reply, reply, headers=headers)
        endpoint.processing_time += time.perf_counter_ns() - started


async def add_service(
    client: Client,
    name: str,
    version: str,
    *,
    description: str = "",
    metadata: Mapping[str, str] | None = None,
) -> Service:
    """Start a service answering the ``$SRV`` subjects; raises ValueError for a bad name or version."""
    if not _NAME.match(name):
        raise ValueError(f"invalid service name {name!r}: use letters, digits, '-' and '_'")
    if not _SEMVER.match(version):
        raise ValueError(f"invalid service version {version!r}: need a semantic version such as 1.0.0")
    service = Service(client, name, version, description, metadata or {})
    await service._start_control()
    return service
