"""The ASGI lifespan protocol: an app's startup before it serves, its shutdown after the last connection.

``Lifespan`` runs the app once with a ``lifespan`` scope for the whole life of a
server run, on the server's loop: ``startup`` sends ``lifespan.startup`` and waits for
the app's answer, ``shutdown`` sends ``lifespan.shutdown`` and waits again.  In mode
``auto`` an app that raises before answering the startup is taken not to support
lifespan (as uvicorn does) and is served without it; in mode ``on`` that is a failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Literal

from railcar.errors import RailcarError

log = logging.getLogger("railcar.http")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
LifespanMode = Literal["auto", "on", "off"]
LIFESPAN_MODES: tuple[LifespanMode, ...] = ("auto", "on", "off")
_ANSWERS = frozenset(
    f"lifespan.{phase}.{outcome}" for phase in ("startup", "shutdown") for outcome in ("complete", "failed")
)


class LifespanFailed(RailcarError):
    """The ASGI app's lifespan startup or shutdown failed (its message, or why)."""


class Lifespan:
    """One run of an ASGI app's lifespan; ``state`` is what it leaves for its requests' scopes."""

    def __init__(self, app: ASGIApp, mode: LifespanMode = "auto") -> None:
        if mode not in LIFESPAN_MODES:
            raise ValueError(f"lifespan must be one of {', '.join(LIFESPAN_MODES)}, not {mode!r}")
        self.app = app
        self.mode = mode
        self.state: dict[str, Any] = {}
        self._events: asyncio.Queue[Message] = asyncio.Queue()
        self._answers: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._supported = mode != "off"

    async def startup(self) -> None:
        """Start the app's lifespan and wait for its answer; raises LifespanFailed."""
        if not self._supported:
            return
        scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.4"}}
        scope["state"] = self.state
        self._task = asyncio.get_running_loop().create_task(self._run(scope))
        await self._exchange("startup")

    async def shutdown(self) -> None:
        """Tell the app to shut down and wait for its answer; raises LifespanFailed."""
        if self._task is None or not self._supported:
            return
        try:
            await self._exchange("shutdown")
        finally:
            await self._task

    async def _exchange(self, phase: str) -> None:
        await self._events.put({"type": f"lifespan.{phase}"})
        answer = await self._answers.get()
        kind = answer["type"]
        if kind == f"lifespan.{phase}.complete" or (kind == "returned" and phase == "shutdown"):
            return
        if kind == "unsupported":
            if self.mode == "on":
                raise LifespanFailed(f"lifespan {phase} failed: {answer['error']}")
            log.info("ASGI app does not support lifespan (%s); serving it without", answer["error"])
            self._supported = False
            return
        if kind in (f"lifespan.{phase}.failed", "failed"):
            raise LifespanFailed(f"lifespan {phase} failed: {answer.get('message', '')}")
        raise LifespanFailed(f"lifespan {phase}: unexpected ASGI message {kind!r}")

    async def _run(self, scope: Scope) -> None:
        answered = False

        async def receive() -> Message:
            return await self._events.get()

        async def send(message: Message) -> None:
            nonlocal answered
            if message.get("type") not in _ANSWERS:
                # An app that knows only http answers the lifespan scope with http messages:
                # raised in the app, which auto mode takes as "lifespan unsupported".
                raise LifespanFailed(f"unexpected ASGI message {message.get('type')!r} in a lifespan scope")
            answered = True
            await self._answers.put(message)

        try:
            await self.app(scope, receive, send)
        except Exception as error:
            if answered:
                log.exception("ASGI app's lifespan raised")
                await self._answers.put({"type": "failed", "message": repr(error)})
            else:
                await self._answers.put({"type": "unsupported", "error": f"it raised {error!r}"})
            return
        # The app returned: answer a phase still waiting, so that nobody waits for ever.
        if answered:
            await self._answers.put({"type": "returned"})
        else:
            await self._answers.put({"type": "unsupported", "error": "it returned without answering"})
