"""The asyncio request–response client: calls made in one loop turn travel in one frame."""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from numpy.typing import NDArray

from railcar.codecs import Codec, CodecFactory, FixedSizeCodec, codec_factory
from railcar.errors import (
    CodecError,
    ConnectionLost,
    InFlightLimit,
    ProtocolError,
    RemoteError,
    RequestTimeout,
    renewed,
)
from railcar.proto.reqrep import (
    CONN_ERROR,
    DEFAULT_MAX_FRAME,
    ERROR,
    REPLY,
    REPLY_IDS,
    REQUEST,
    Frame,
    FrameReader,
    begin_frame,
    decode_errors,
    decode_replies,
    end_frame,
    frame_header,
)

log = logging.getLogger("railcar.reqrep")


class _Batch:
    """The pending replies of one call_many: results land in place, one future for all.

    A raw batch (call_array) keeps the reply payloads undecoded and resolves to their bytes.
    """

    __slots__ = ("count", "first_id", "future", "parts", "raw", "remaining", "results")

    def __init__(self, future: asyncio.Future[Any], first_id: int, count: int, raw: bool = False) -> None:
        self.future = future
        self.first_id = first_id
        self.count = count
        self.remaining = count
        self.raw = raw
        self.results: list[Any] = [] if raw else [None] * count
        self.parts: list[tuple[int, bytes]] = []

    def fill_raw(self, offset: int, count: int, payload: bytes) -> None:
        self.parts.append((offset, payload))
        self.remaining -= count
        if not self.remaining and not self.future.done():
            self.future.set_result(b"".join(part for _, part in sorted(self.parts)))

    def fill(self, offset: int, values: Sequence[Any]) -> None:
        self.results[offset : offset + len(values)] = values
        self.remaining -= len(values)
        if not self.remaining and not self.future.done():
            self.future.set_result(self.results)


class _Protocol(asyncio.Protocol):
    def __init__(self, client: Client) -> None:
        self.client = client
        self.closed = client._loop.create_future()

    def data_received(self, data: bytes) -> None:
        self.client._on_data(data)

    def pause_writing(self) -> None:
        self.client._write_paused = True

    def resume_writing(self) -> None:
        self.client._write_paused = False
        self.client._wake_waiters()

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._lost(ConnectionLost(f"connection lost: {exc}" if exc else "connection closed by peer"))
        if not self.closed.done():
            self.closed.set_result(None)


class Client:
    """One connection to a request–response server; use ``await Client.connect(...)``.

    ``call`` and ``call_many`` from many tasks share frames: requests made in the same
    loop turn (or within ``window`` seconds) are encoded and written together.
    """

    def __init__(
        self,
        codec: Codec[Any],
        *,
        max_in_flight: int,
        batch_size: int,
        window: float,
        max_frame: int,
    ) -> None:
        self._codec = codec
        # Checked once: isinstance against a runtime Protocol costs tens of microseconds.
        self._fixed = codec if isinstance(codec, FixedSizeCodec) else None
        self._max_in_flight = max_in_flight
        self._batch_size = batch_size
        self._window = window
        self._reader = FrameReader(max_frame)
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._protocol: _Protocol | None = None
        self._next_id = 1
        self._queued: list[Any] = []
        self._queued_ids: list[int] = []
        self._flush_handle: asyncio.Handle | None = None
        self._pending_out = bytearray()
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._batches: dict[int, tuple[_Batch, int]] = {}
        self._in_flight = 0
        self._write_paused = False
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._failure: BaseException | None = None
        self.late_replies = 0

    @classmethod
    async def connect(
        cls,
        host: str = "127.0.0.1",
        port: int = 7001,
        codec: str | CodecFactory = "int32",
        *,
        unix: str | None = None,
        max_in_flight: int = 100_000,
        batch_size: int = 1000,
        window: float = 0.0,
        max_frame: int = DEFAULT_MAX_FRAME,
        nodelay: bool = True,
        write_buffer: int = 1024 * 1024,
    ) -> Client:
        """Connect and return a client; raises OSError (unreachable) or ValueError (bad options)."""
        if max_in_flight < 1 or batch_size < 1 or not window >= 0 or max_frame < 64 or write_buffer < 0:
            raise ValueError(
                "need max_in_flight >= 1, batch_size >= 1, window >= 0, max_frame >= 64 and write_buffer >= 0"
            )
        factory = codec_factory(codec) if isinstance(codec, str) else codec
        client = cls(
            factory(), max_in_flight=max_in_flight, batch_size=batch_size, window=window, max_frame=max_frame
        )
        loop = asyncio.get_running_loop()
        if unix:
            transport, protocol = await loop.create_unix_connection(lambda: _Protocol(client), unix)
        else:
            transport, protocol = await loop.create_connection(lambda: _Protocol(client), host, port)
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(nodelay))
        transport.set_write_buffer_limits(write_buffer)
        client._transport = transport
        client._protocol = protocol
        return client

    @property
    def in_flight(self) -> int:
        """Requests sent or queued that have no reply yet."""
        return self._in_flight

    async def call(self, request: Any, timeout: float | None = None) -> Any:
        """Send one request and return its reply; raises RemoteError, RequestTimeout or ConnectionLost."""
        if self._in_flight >= self._max_in_flight or self._write_paused:
            await self._wait_for_room(1)
        if self._failure is not None:
            raise renewed(self._failure)
        future: asyncio.Future[Any] = self._loop.create_future()
        request_id = self._next_id
        self._next_id += 1
        self._calls[request_id] = future
        self._enqueue(request_id, request)
        if timeout is None:
            return await future
        timer = self._loop.call_later(timeout, self._expire_call, request_id, timeout)
        try:
            return await future
        finally:
            timer.cancel()

    async def call_many(self, requests: Sequence[Any], timeout: float | None = None) -> list[Any]:
        """Send requests as one batch and return their replies in order; raises like ``call``."""
        if not requests:
            return []
        payloads = []
        for start in range(0, len(requests), self._batch_size):
            out = bytearray()
            try:
                self._codec.encode_batch(requests[start : start + self._batch_size], out)
            except CodecError:
                raise
            except (TypeError, ValueError) as exc:
                raise CodecError(f"cannot encode request: {exc}") from exc
            payloads.append(out)
        if self._in_flight + len(requests) > self._max_in_flight or self._write_paused:
            await self._wait_for_room(len(requests))
        batch = self._send_batch(len(requests), payloads, raw=False)
        result: list[Any] = await (batch.future if timeout is None else self._timed(batch, timeout))
        return result

    async def call_array(self, records: NDArray[Any], timeout: float | None = None) -> NDArray[Any]:
        """Send an array of fixed-size records as one batch and return the replies as an array.

        No per-record Python code runs on this side; raises CodecError for a variable-size
        codec, and like ``call`` otherwise.
        """
        codec = self._fixed
        if codec is None:
            raise CodecError(f"call_array needs a fixed-size codec, not {self._codec.name!r}")
        count = len(records)
        if not count:
            return records[:0]
        encoded = codec.encode_array(records)
        if count <= self._batch_size:
            payloads: list[bytes | memoryview] = [encoded]
        else:
            step = self._batch_size * codec.itemsize
            view = memoryview(encoded)
            payloads = [view[start : start + step] for start in range(0, len(encoded), step)]
        if self._in_flight + count > self._max_in_flight or self._write_paused:
            await self._wait_for_room(count)
        batch = self._send_batch(count, payloads, raw=True)
        payload: bytes = await (batch.future if timeout is None else self._timed(batch, timeout))
        return codec.decode_array(payload)

    def _send_batch(
        self, count: int, payloads: Sequence[bytes | bytearray | memoryview], raw: bool
    ) -> _Batch:
        """Write a batch as frames of ``batch_size`` requests (the last fewer); raises ConnectionLost.

        A plain function, not a coroutine: the caller awaits the batch's future itself, one
        coroutine frame fewer per batch.
        """
        if self._failure is not None:
            raise renewed(self._failure)
        if self._queued:
            self._flush()  # keep ids and frames in order
        first_id = self._next_id
        self._next_id += count
        batch = _Batch(self._loop.create_future(), first_id, count, raw)
        frames: list[bytes | bytearray | memoryview] = []
        batches = self._batches
        for index, payload in enumerate(payloads):
            offset = index * self._batch_size
            batches[first_id + offset] = (batch, offset)
            frames.append(
                frame_header(REQUEST, min(self._batch_size, count - offset), first_id + offset, len(payload))
            )
            frames.append(payload)
        self._in_flight += count
        if self._pending_out:
            self._write_pending()
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.writelines(frames)
        return batch

    async def _timed(self, batch: _Batch, timeout: float) -> Any:
        """Await a batch, failing it with RequestTimeout after ``timeout`` seconds."""
        timer = self._loop.call_later(timeout, self._expire_batch, batch, timeout)
        try:
            return await batch.future
        finally:
            timer.cancel()

    def send(self, request: Any, callback: Callable[[Any], None]) -> None:
        """Queue a request without waiting; ``callback`` gets its reply or exception.

        Raises ConnectionLost after a failure and InFlightLimit when ``max_in_flight``
        requests are pending (await ``call`` instead to wait for room).
        """
        if self._failure is not None:
            raise renewed(self._failure)
        if self._in_flight >= self._max_in_flight:
            raise InFlightLimit(f"{self._in_flight} requests in flight (max_in_flight={self._max_in_flight})")
        future: asyncio.Future[Any] = self._loop.create_future()
        future.add_done_callback(lambda done: callback(done.exception() or done.result()))
        request_id = self._next_id
        self._next_id += 1
        self._calls[request_id] = future
        self._enqueue(request_id, request)

    async def close(self, deadline: float = 5.0) -> None:
        """Close the connection once queued requests are written (aborting at ``deadline`` s).

        Calls still waiting fail with ConnectionLost; raises nothing.
        """
        self._flush()
        self._write_pending()
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.close()
        self._lost(ConnectionLost("client closed"))
        if transport is not None and self._protocol is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._protocol.closed), deadline)
            except TimeoutError:
                transport.abort()
                await asyncio.shield(self._protocol.closed)

    async def __aenter__(self) -> Client:
        """Use as ``async with await Client.connect(...) as client``."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the client."""
        await self.close()

    # -- sending --------------------------------------------------------------------------

    def _enqueue(self, request_id: int, request: Any) -> None:
        self._queued.append(request)
        self._queued_ids.append(request_id)
        self._in_flight += 1
        if len(self._queued) >= self._batch_size:
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = (
                self._loop.call_later(self._window, self._flush)
                if self._window
                else self._loop.call_soon(self._flush)
            )

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._queued:
            return
        requests, ids = self._queued, self._queued_ids
        self._queued, self._queued_ids = [], []
        out = bytearray()
        start = begin_frame(out)
        try:
            self._codec.encode_batch(requests, out)
        except (CodecError, TypeError, ValueError):
            del out[start:]
            self._encode_individually(requests, ids, out)
        else:
            end_frame(out, start, REQUEST, len(requests), ids[0])
        self._write(out)
        self._write_pending()  # _flush already runs a turn late: send now, with any batches queued

    def _encode_individually(self, requests: list[Any], ids: list[int], out: bytearray) -> None:
        """Fail only the requests that cannot be encoded; each good one gets its own frame."""
        for request_id, request in zip(ids, requests, strict=True):
            start = begin_frame(out)
            try:
                self._codec.encode_batch([request], out)
            except (CodecError, TypeError, ValueError) as exc:
                del out[start:]
                self._settle(request_id, CodecError(f"cannot encode request: {exc}"))
            else:
                end_frame(out, start, REQUEST, 1, request_id)

    def _write(self, out: bytearray) -> None:
        """Queue frames; everything queued in one loop turn leaves in one write."""
        if not out:
            return
        if not self._pending_out:
            self._loop.call_soon(self._write_pending)
        self._pending_out += out

    def _write_pending(self) -> None:
        pending, self._pending_out = self._pending_out, bytearray()
        if pending and self._transport is not None and not self._transport.is_closing():
            self._transport.write(bytes(pending))

    # -- receiving ------------------------------------------------------------------------

    def _on_data(self, data: bytes) -> None:
        try:
            for frame in self._reader.feed(data):
                self._on_frame(frame)
        except (ProtocolError, CodecError, ConnectionLost) as exc:
            failure = (
                exc if isinstance(exc, ConnectionLost) else ProtocolError(f"invalid reply from server: {exc}")
            )
            log.warning("closing connection: %s", failure)
            self._lost(failure)
            if self._transport is not None:
                self._transport.abort()
        if self._waiters and self._in_flight < self._max_in_flight:
            self._wake_waiters()

    def _on_frame(self, frame: Frame) -> None:
        kind = frame.kind
        if kind == REPLY:
            entry = self._batches.pop(frame.first_id, None)
            if entry is not None and entry[0].raw:
                assert self._fixed is not None  # only call_array makes raw batches
                if len(frame.payload) != frame.count * self._fixed.itemsize:
                    raise ProtocolError(f"reply frame size does not match its {frame.count} records")
                self._in_flight -= frame.count
                entry[0].fill_raw(entry[1], frame.count, frame.payload)
                return
            ids, replies = decode_replies(frame, self._codec.decode_batch)
            if entry is not None:
                batch, offset = entry
                self._in_flight -= len(replies)
                batch.fill(offset, replies)
                return
            self._deliver(ids, replies)
        elif kind == REPLY_IDS:
            self._deliver(*decode_replies(frame, self._codec.decode_batch))
        elif kind == ERROR:
            for first_id, count, message in decode_errors(frame, widest=self._batch_size):
                entry = self._batches.get(first_id)
                if entry is not None:  # a whole frame of a batch: the batch fails once
                    self._fail_batch(entry[0], RemoteError(message))
                    continue
                for request_id in range(first_id, first_id + count):
                    self._settle(request_id, RemoteError(message))
        elif kind == CONN_ERROR:
            raise ConnectionLost(f"server closed the connection: {frame.payload.decode('utf-8', 'replace')}")
        else:
            raise ProtocolError(f"unexpected frame kind {kind} from server")

    def _deliver(self, ids: Sequence[int], replies: Sequence[Any]) -> None:
        calls = self._calls
        for request_id, reply in zip(ids, replies, strict=True):
            future = calls.pop(request_id, None)
            if future is not None:
                self._in_flight -= 1
                if not future.done():
                    future.set_result(reply)
            else:
                self._settle(request_id, reply)

    def _settle(self, request_id: int, outcome: Any) -> None:
        """Resolve one request wherever it waits (a call or a member of a batch)."""
        future = self._calls.pop(request_id, None)
        if future is not None:
            self._in_flight -= 1
            if not future.done():
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
            return
        for batch, offset in list(self._batches.values()):
            start = batch.first_id + offset
            if start <= request_id < start + min(self._batch_size, batch.count - offset):
                if isinstance(outcome, BaseException):
                    self._fail_batch(batch, outcome)
                else:
                    self._in_flight -= 1
                    batch.fill(request_id - batch.first_id, [outcome])
                return
        self.late_replies += 1

    # -- flow control and failure ---------------------------------------------------------

    async def _wait_for_room(self, count: int) -> None:
        while self._failure is None and (
            self._write_paused or (self._in_flight and self._in_flight + count > self._max_in_flight)
        ):
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._waiters.append(waiter)
            await waiter

    def _wake_waiters(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def _expire_call(self, request_id: int, timeout: float) -> None:
        self._settle(request_id, RequestTimeout(f"no reply within {timeout} s"))
        self._wake_waiters()

    def _expire_batch(self, batch: _Batch, timeout: float) -> None:
        self._fail_batch(batch, RequestTimeout(f"no reply within {timeout} s"))
        self._wake_waiters()

    def _fail_batch(self, batch: _Batch, error: BaseException) -> None:
        """Fail a whole batch: forget its frames (their late replies are then counted) and free its window."""
        for frame_id in range(batch.first_id, batch.first_id + batch.count, self._batch_size):
            self._batches.pop(frame_id, None)
        self._in_flight -= batch.remaining
        batch.remaining = 0
        if not batch.future.done():
            batch.future.set_exception(error)

    def _lost(self, exc: BaseException) -> None:
        if self._failure is not None:
            return
        self._failure = exc
        calls, self._calls = self._calls, {}
        for future in calls.values():
            if not future.done():
                future.set_exception(renewed(exc))
        batches, self._batches = self._batches, {}
        for batch, _ in batches.values():
            if not batch.future.done():
                batch.future.set_exception(renewed(exc))
        self._queued.clear()
        self._queued_ids.clear()
        self._in_flight = 0
        self._wake_waiters()


class ClientPool:
    """Several connections to one server; calls go round-robin over them."""

    def __init__(self, clients: list[Client]) -> None:
        self._clients = clients
        self._next = itertools.cycle(clients).__next__

    @classmethod
    async def connect(
        cls, host: str = "127.0.0.1", port: int = 7001, size: int = 4, **options: Any
    ) -> ClientPool:
        """Open ``size`` connections; raises OSError or ValueError like ``Client.connect``."""
        if size < 1:
            raise ValueError("pool size must be at least 1")
        outcomes = await asyncio.gather(
            *(Client.connect(host, port, **options) for _ in range(size)), return_exceptions=True
        )
        clients = [outcome for outcome in outcomes if isinstance(outcome, Client)]
        if len(clients) < size:
            await asyncio.gather(*(client.close() for client in clients))  # no half-made pool left open
            raise next(outcome for outcome in outcomes if isinstance(outcome, BaseException))
        return cls(clients)

    async def call(self, request: Any, timeout: float | None = None) -> Any:
        """Send one request on the next connection; raises like ``Client.call``."""
        return await self._next().call(request, timeout)

    async def call_many(self, requests: Sequence[Any], timeout: float | None = None) -> list[Any]:
        """Send a batch on the next connection; raises like ``Client.call_many``."""
        return await self._next().call_many(requests, timeout)

    async def close(self) -> None:
        """Close every connection."""
        await asyncio.gather(*(client.close() for client in self._clients))
