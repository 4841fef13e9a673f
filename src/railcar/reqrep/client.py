"""The asyncio request–response client: calls made in one loop turn travel in one frame.

The shared rules (ids, the pending table, encoding, frame limits, failing calls) live in
``reqrep/core.py``; this module keeps only the asyncio side: futures, the transport, and the
connection's life (reconnection, timeouts that cover every wait, close).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from numpy.typing import NDArray

from railcar.clientcore.connection import ClientConnection
from railcar.clientcore.dial import Dial, tcp_dial, unix_dial
from railcar.clientcore.gate import Gate
from railcar.clientcore.reconnect import Callback, ReconnectPolicy, notify_soon
from railcar.codecs import CodecFactory, codec_factory
from railcar.errors import ConnectionLost, InFlightLimit, ProtocolError, RequestTimeout, renewed
from railcar.proto.reqrep import DEFAULT_MAX_FRAME
from railcar.reqrep.core import Batch, ClientCore, ClientState, check_limits

log = logging.getLogger("railcar.reqrep")


class _Connection(ClientConnection):
    """One transport's events, passed to the client that made it; a replaced one is ignored."""

    client: Client


class Client(ClientState):
    """One connection to a request–response server; use ``await Client.connect(...)``.

    ``call`` and ``call_many`` from many tasks share frames: requests made in the same
    loop turn (or within ``window`` seconds) are encoded and written together.  A call's
    ``timeout`` covers all of its waits: for the connection, for room in the in-flight
    window, for a transport that stopped taking writes, and for the reply.
    """

    def __init__(
        self,
        core: ClientCore,
        dial: Dial,
        policy: ReconnectPolicy,
        *,
        window: float,
        write_buffer: int,
        connect_timeout: float,
    ) -> None:
        self._core = core
        self._dial = dial
        self._policy = policy
        self._window = window
        self._write_buffer = write_buffer
        self._connect_timeout = connect_timeout
        self._loop = asyncio.get_running_loop()
        self._connection: _Connection | None = None
        self._flush_handle: asyncio.Handle | None = None
        self._gate = Gate(self._loop)  # callers waiting to be connected, for room, for writes
        self._closed = False
        self._failure: BaseException = ConnectionLost("client closed")
        self._reconnecting: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Future[Any]] = set()  # callbacks' coroutines: the loop keeps weak references
        self.reconnects = 0

    @classmethod
    async def connect(
        cls,
        host: str = "127.0.0.1",
        port: int = 7001,
        codec: str | CodecFactory = "int32",
        *,
        unix: str | None = None,
        dial: Dial | None = None,
        max_in_flight: int = 100_000,
        batch_size: int = 1000,
        window: float = 0.0,
        max_frame: int = DEFAULT_MAX_FRAME,
        nodelay: bool = True,
        write_buffer: int = 1024 * 1024,
        connect_timeout: float = 10.0,
        reconnect: bool = True,
        reconnect_wait: float = 1.0,
        max_reconnects: int | None = None,
        on_disconnect: Callback | None = None,
        on_reconnect: Callback | None = None,
        retry_on_failed_connect: bool = False,
    ) -> Client:
        """Connect and return a client; raises OSError (unreachable, timed out) or ValueError (bad options).

        ``dial`` replaces how a connection is opened (``host``/``port``/``unix`` are then unused).
        With ``reconnect``, a lost connection is dialled again every ``reconnect_wait``
        seconds (less up to 20% jitter), at most ``max_reconnects`` times in a row (None: no
        limit); ``on_disconnect(error)`` and ``on_reconnect()`` (plain or async functions) are
        told.  Calls pending at the loss fail with ConnectionLost, never re-sent.  With
        ``retry_on_failed_connect``, a first connection that fails does not raise: the client
        is returned and dials in the background the same way (its first connection then
        counts as a reconnect and calls ``on_reconnect``); calls wait for it within their timeout.
        """
        check_limits(max_in_flight, batch_size, max_frame)
        if not window >= 0 or write_buffer < 0 or not connect_timeout > 0:
            raise ValueError(
                f"need window >= 0, write_buffer >= 0 and connect_timeout > 0 "
                f"(got {window}, {write_buffer}, {connect_timeout})"
            )
        policy = ReconnectPolicy(
            reconnect, reconnect_wait, max_reconnects, on_disconnect, on_reconnect, retry_on_failed_connect
        )
        factory = codec_factory(codec) if isinstance(codec, str) else codec
        core = ClientCore(factory, max_in_flight=max_in_flight, batch_size=batch_size, max_frame=max_frame)
        if dial is None:
            dial = unix_dial(unix) if unix else tcp_dial(host, port, nodelay)
        client = cls(
            core, dial, policy, window=window, write_buffer=write_buffer, connect_timeout=connect_timeout
        )
        try:
            await client._open()
        except OSError as exc:  # ConnectionLost and TimeoutError included
            if not retry_on_failed_connect:
                raise
            log.info("first connection failed, dialling again in the background: %s", exc)
            client.last_error = exc
            client._reconnecting = client._loop.create_task(client._reconnect(exc))
        return client

    @property
    def connected(self) -> bool:
        """True while a connection is up (False while reconnecting and once closed)."""
        return self._connection is not None

    async def call(self, request: Any, timeout: float | None = None) -> Any:
        """Return the reply to one request; raises RemoteError, RequestTimeout, ConnectionLost, CodecError."""
        core = self._core
        connection = self._connection
        deadline = None
        # Behind anyone already waiting (first come, first served), even when this one would fit.
        if (
            connection is None
            or connection.paused
            or core.in_flight >= core.max_in_flight
            or self._gate.waiting
        ):
            deadline = None if timeout is None else self._loop.time() + timeout
            await self._ready(1, deadline, timeout)
        future: asyncio.Future[Any] = self._loop.create_future()
        request_id = core.queue_call(request, future)
        if len(core.queued) >= core.batch_size:
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = (
                self._loop.call_later(self._window, self._flush)
                if self._window
                else self._loop.call_soon(self._flush)
            )
        try:
            if timeout is None:
                return await future
            delay = timeout if deadline is None else deadline - self._loop.time()
            timer = self._loop.call_later(delay, self._expire_call, request_id, timeout)
            try:
                return await future
            finally:
                timer.cancel()
        except asyncio.CancelledError:
            if core.fail_call(
                request_id, ConnectionLost("cancelled")
            ):  # the future is cancelled: only the slot
                self._wake_waiters()
            raise

    async def call_many(self, requests: Sequence[Any], timeout: float | None = None) -> list[Any]:
        """Send requests as one batch and return the replies in order; raises like ``call`` or FrameTooLarge.

        The batch travels as frames of at most ``batch_size`` requests, split further to
        stay within the frame limit; a request that alone is over it fails the batch.
        """
        if not requests:
            return []
        result: list[Any] = await self._batch(
            self._core.encode_batch(requests), len(requests), timeout, False
        )
        return result

    async def call_array(self, records: NDArray[Any], timeout: float | None = None) -> NDArray[Any]:
        """Send an array of fixed-size records as one batch and return the replies as an array.

        No per-record Python code runs on this side; raises CodecError for a variable-size
        codec, and like ``call_many`` otherwise.
        """
        core = self._core
        payloads = core.encode_array(records)
        if not len(records):
            return records[:0]
        payload: bytes = await self._batch(payloads, len(records), timeout, True)
        assert core.fixed is not None  # encode_array refused any other codec
        return core.fixed.decode_array(payload)

    async def _batch(
        self,
        payloads: list[tuple[int, bytes | bytearray | memoryview]],
        count: int,
        timeout: float | None,
        raw: bool,
    ) -> Any:
        """Write an encoded batch at once (it is already a batch) and await its replies."""
        core = self._core
        connection = self._connection
        deadline = None
        if connection is None or connection.paused or not core.has_room(count) or self._gate.waiting:
            deadline = None if timeout is None else self._loop.time() + timeout
            await self._ready(count, deadline, timeout)
            connection = self._connection
        assert connection is not None  # _ready returns connected
        assert connection.transport is not None
        if core.queued:
            self._flush()  # keep ids and frames in order
        future: asyncio.Future[Any] = self._loop.create_future()
        batch, chunks = core.start_batch(payloads, future, raw)
        connection.transport.writelines(chunks)
        try:
            if timeout is None:
                return await future
            delay = timeout if deadline is None else deadline - self._loop.time()
            timer = self._loop.call_later(delay, self._expire_batch, batch, timeout)
            try:
                return await future
            finally:
                timer.cancel()
        except asyncio.CancelledError:
            core.fail_batch(batch, ConnectionLost("cancelled"))  # the future is cancelled: only the slots
            self._wake_waiters()
            raise

    def send(self, request: Any, callback: Callable[[Any], None]) -> None:
        """Queue a request without waiting; ``callback`` gets its reply or exception.

        Raises ConnectionLost when closed or not connected (reconnecting), and InFlightLimit
        when ``max_in_flight`` requests are pending (await ``call`` instead to wait).
        """
        if self._closed:
            raise renewed(self._failure)
        if self._connection is None:
            raise ConnectionLost("not connected (reconnecting)")
        core = self._core
        if core.in_flight >= core.max_in_flight:
            raise InFlightLimit(f"{core.in_flight} requests in flight (max_in_flight={core.max_in_flight})")
        future: asyncio.Future[Any] = self._loop.create_future()
        future.add_done_callback(lambda done: callback(done.exception() or done.result()))
        core.queue_call(request, future)
        if len(core.queued) >= core.batch_size:
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    async def close(self, deadline: float = 5.0) -> None:
        """Close for good: calls still waiting fail with ConnectionLost, requests not yet written are dropped.

        Waits until the transport has closed (aborting it after ``deadline`` s); raises nothing.
        """
        self._closed = True
        self._failure = ConnectionLost("client closed")
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        reconnecting, self._reconnecting = self._reconnecting, None
        if reconnecting is not None:
            reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reconnecting
        connection, self._connection = self._connection, None
        self._core.fail_all(self._failure)
        self._wake_waiters()
        if connection is None or connection.transport is None:
            return
        connection.transport.close()
        try:
            await asyncio.wait_for(asyncio.shield(connection.closed), deadline)
        except TimeoutError:
            connection.transport.abort()
            await asyncio.shield(connection.closed)

    async def __aenter__(self) -> Client:
        """Use as ``async with await Client.connect(...) as client``."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the client."""
        await self.close()

    # -- waiting ---------------------------------------------------------------------------

    async def _ready(self, count: int, deadline: float | None, timeout: float | None) -> None:
        """Wait until connected, room for ``count``, writes taken; raises RequestTimeout, ConnectionLost."""

        def ready() -> bool:
            if self._closed:
                raise renewed(self._failure)
            connection = self._connection
            return connection is not None and not connection.paused and self._core.has_room(count)

        await self._gate.wait(ready, deadline, timeout, lambda: self._waiting_for(self._connection))

    def _waiting_for(self, connection: _Connection | None) -> str:
        if connection is None:
            return "not connected (reconnecting)"
        if connection.paused:
            return "the connection took no more writes (the server is not reading)"
        return f"no room in the in-flight window (max_in_flight={self._core.max_in_flight})"

    def _wake_waiters(self) -> None:
        self._gate.open()

    def _expire_call(self, request_id: int, timeout: float) -> None:
        if self._core.fail_call(request_id, RequestTimeout(f"no reply within {timeout} s")):
            self._wake_waiters()

    def _expire_batch(self, batch: Batch, timeout: float) -> None:
        self._core.fail_batch(batch, RequestTimeout(f"no reply within {timeout} s"))
        self._wake_waiters()

    # -- the connection --------------------------------------------------------------------

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        core = self._core
        if not core.queued:
            return
        in_flight = core.in_flight
        out = core.take_queued()
        connection = self._connection
        if out and connection is not None and connection.transport is not None:
            connection.transport.write(out)
        if core.in_flight < in_flight:  # calls that could not be encoded freed their slots
            self._wake_waiters()

    def _on_data(self, connection: _Connection, data: bytes) -> None:
        core = self._core
        try:
            core.receive(data)
        except (ProtocolError, ConnectionLost) as exc:
            failure = (
                exc if isinstance(exc, ConnectionLost) else ProtocolError(f"invalid reply from server: {exc}")
            )
            log.warning("closing connection: %s", failure)
            self._on_lost(connection, failure)
            if connection.transport is not None:
                connection.transport.abort()
        if self._gate and core.in_flight < core.max_in_flight:
            self._wake_waiters()

    async def _open(self) -> None:
        """Dial one connection and make it the live one; raises OSError."""
        connection = _Connection(self)
        try:
            await asyncio.wait_for(self._dial(lambda: connection), self._connect_timeout)
        except TimeoutError:
            raise TimeoutError(f"no connection within {self._connect_timeout} s") from None
        if connection.lost or connection.transport is None:
            raise ConnectionLost("connection closed while connecting")
        connection.transport.set_write_buffer_limits(self._write_buffer)
        connection.transport.write(self._core.connection_made())
        self._connection = connection
        self._wake_waiters()

    def _on_lost(self, connection: _Connection, error: BaseException) -> None:
        """The live connection ended: fail what it carried, then reconnect or close for good."""
        if connection is not self._connection:
            return  # an old connection, already replaced, or the client closed
        self._connection = None
        self.last_error = error
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._core.fail_all(error)
        if not self._policy.reconnect:
            self._closed = True
            self._failure = error
        else:
            self._notify(self._policy.on_disconnect, error)
            self._reconnecting = self._loop.create_task(self._reconnect(error))
        self._wake_waiters()

    async def _reconnect(self, error: BaseException) -> None:
        attempts = 0
        while not self._policy.gave_up(attempts):
            await asyncio.sleep(self._policy.pause())
            attempts += 1
            try:
                await self._open()
            except Exception as exc:  # noqa: BLE001 - a custom dial's bug too: it must not end reconnecting
                log.info("reconnect attempt %d failed: %r", attempts, exc)
                error = self.last_error = exc
                continue
            self._reconnecting = None
            self.reconnects += 1
            log.info("reconnected after %d attempts", attempts)
            self._notify(self._policy.on_reconnect)
            return
        self._reconnecting = None
        self._closed = True
        self._failure = ConnectionLost(f"gave up reconnecting after {attempts} attempts; last error: {error}")
        self._wake_waiters()

    def _notify(self, callback: Callback | None, *args: Any) -> None:
        notify_soon(callback, self._tasks, *args)
