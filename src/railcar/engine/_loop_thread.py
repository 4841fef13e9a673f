"""An asyncio event loop run on a thread of its own: what the asyncio and uvloop engines share.

The stream servers (``asyncio_.py``) and the datagram servers (``asyncio_datagram.py``)
both start a loop on a background thread, open their socket on it, report a failure to
open back to the thread that called ``start``, then run the loop until ``_stop`` stops it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import cast

from railcar.engine._failures import call_logged


class LoopThread:
    """A mixin for servers whose handlers run on ``_loop``, served by ``_thread`` from start to stop."""

    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    def new_loop(self) -> asyncio.AbstractEventLoop:
        """Create the event loop this engine runs on."""
        return asyncio.new_event_loop()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the handlers run on while the server runs; None before start and after stop."""
        return self._loop if self._thread is not None else None

    def _start_loop(
        self,
        sock: socket.socket,
        thread_name: str,
        open_socket: Callable[[], Awaitable[None]],
        on_start: Callable[[], object],
    ) -> None:
        """Run a new loop on a new thread, ``open_socket()`` first; raises what that raised.

        ``sock`` (the socket ``open_socket`` serves) is closed if it fails; ``on_start`` is
        called on the loop once it has succeeded.
        """
        self._loop = self.new_loop()
        started = threading.Event()
        failures: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run_loop, args=(sock, open_socket, on_start, started, failures), name=thread_name
        )
        self._thread.start()
        started.wait()
        if failures:
            self._thread.join()
            self._thread = None
            self._loop = None
            raise failures[0]

    def _run_loop(
        self,
        sock: socket.socket,
        open_socket: Callable[[], Awaitable[None]],
        on_start: Callable[[], object],
        started: threading.Event,
        failures: list[BaseException],
    ) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(open_socket())
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that called start()
            failures.append(exc)
            sock.close()
            loop.close()
            started.set()
            return
        started.set()
        loop.call_soon(call_logged, on_start)
        try:
            loop.run_forever()
        finally:
            loop.close()


class UvloopLoop(LoopThread):
    """The loop-thread mixin on uvloop."""

    def new_loop(self) -> asyncio.AbstractEventLoop:
        """Create a uvloop event loop."""
        import uvloop  # noqa: PLC0415 - optional; the registry checks it is importable

        return cast(asyncio.AbstractEventLoop, uvloop.new_event_loop())
