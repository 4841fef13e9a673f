"""The threaded request–response client: blocking calls, safe from many threads, no event loop.

Threads that call at the same time share frames: the first thread to find nothing
being sent becomes the sender and writes every request queued so far, including
those other threads add while it writes (a combining writer, so no writer thread
and no per-request system call).  One reader thread wakes each caller through its
own lock.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Sequence
from typing import Any

from railcar.codecs import Codec, CodecFactory, codec_factory
from railcar.errors import CodecError, ConnectionLost, ProtocolError, RemoteError, RequestTimeout, renewed
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
)


class _Waiter:
    """Where one call (or one call_many) waits: a held lock the reader releases."""

    __slots__ = ("count", "error", "first_id", "lock", "remaining", "value")

    def __init__(self, first_id: int, count: int) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.first_id = first_id
        self.count = count
        self.remaining = count
        self.value: list[Any] = [None] * count
        self.error: BaseException | None = None

    def fill(self, request_id: int, values: Sequence[Any]) -> int:
        """Store replies starting at ``request_id``; return how many were new."""
        offset = request_id - self.first_id
        self.value[offset : offset + len(values)] = values
        self.remaining -= len(values)
        if self.remaining <= 0:
            self.lock.release()
        return len(values)

    def fail(self, error: BaseException) -> int:
        """Fail the whole wait; return how many requests it still held."""
        if self.remaining <= 0:
            return 0
        held, self.remaining = self.remaining, 0
        self.error = error
        self.lock.release()
        return held


class SyncClient:
    """A blocking request–response client over one connection; every method is thread-safe."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 7001,
        codec: str | CodecFactory = "int32",
        *,
        unix: str | None = None,
        max_in_flight: int = 100_000,
        batch_size: int = 1000,
        max_frame: int = DEFAULT_MAX_FRAME,
        connect_timeout: float = 10.0,
        nodelay: bool = True,
    ) -> None:
        """Connect; raises OSError if the server cannot be reached, ValueError for bad options."""
        if max_in_flight < 1 or batch_size < 1:
            raise ValueError("need max_in_flight >= 1 and batch_size >= 1")
        factory = codec_factory(codec) if isinstance(codec, str) else codec
        self._codec: Codec[Any] = factory()
        self._decoder: Codec[Any] = factory()  # the reader thread's own instance
        self._max_in_flight = max_in_flight
        self._batch_size = batch_size
        if unix:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._sock.settimeout(connect_timeout)
            self._sock.connect(unix)
        else:
            self._sock = socket.create_connection((host, port), timeout=connect_timeout)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(nodelay))
        self._sock.settimeout(None)
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._next_id = 1
        self._in_flight = 0
        self._waiters: dict[int, _Waiter] = {}
        self._queued: list[Any] = []
        self._queued_ids: list[int] = []
        self._frames: list[bytes] = []
        self._sending = False
        self._failure: BaseException | None = None
        self._reader = FrameReader(max_frame)
        self._thread = threading.Thread(target=self._read_loop, name="railcar-reqrep-reader", daemon=True)
        self._thread.start()

    def call(self, request: Any, timeout: float | None = None) -> Any:
        """Send one request and return its reply; raises RemoteError, RequestTimeout or ConnectionLost."""
        with self._lock:
            request_id = self._reserve(1, timeout)
            waiter = _Waiter(request_id, 1)
            self._waiters[request_id] = waiter
            self._queued.append(request)
            self._queued_ids.append(request_id)
            lead = self._take_lead()
        if lead:
            self._send_queued()
        return self._wait(waiter, timeout)[0]

    def call_many(self, requests: Sequence[Any], timeout: float | None = None) -> list[Any]:
        """Send requests as one batch and return their replies in order; raises like ``call``."""
        count = len(requests)
        if not count:
            return []
        with self._lock:
            first_id = self._reserve(count, timeout)
        out = bytearray()
        try:
            for offset in range(0, count, self._batch_size):
                chunk = requests[offset : offset + self._batch_size]
                start = begin_frame(out)
                self._encode(chunk, out)
                end_frame(out, start, REQUEST, len(chunk), first_id + offset)
        except CodecError:
            with self._lock:
                self._release(count)
            raise
        waiter = _Waiter(first_id, count)
        with self._lock:
            for offset in range(0, count, self._batch_size):
                self._waiters[first_id + offset] = waiter
            self._frames.append(bytes(out))
            lead = self._take_lead()
        if lead:
            self._send_queued()
        return list(self._wait(waiter, timeout))

    def close(self) -> None:
        """Close the connection; calls still waiting fail with ConnectionLost."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(10)
        self._sock.close()

    def __enter__(self) -> SyncClient:
        """Use as a context manager that closes the client."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the client."""
        self.close()

    # -- sending (caller threads) ------------------------------------------------------

    def _reserve(self, count: int, timeout: float | None) -> int:
        """Take ``count`` consecutive ids once the in-flight window has room; lock held."""
        limit = max(self._max_in_flight, count)
        if not self._room.wait_for(
            lambda: self._failure is not None or self._in_flight + count <= limit, timeout
        ):
            raise RequestTimeout(f"no room in the in-flight window within {timeout} s")
        if self._failure is not None:
            raise renewed(self._failure)
        first_id = self._next_id
        self._next_id += count
        self._in_flight += count
        return first_id

    def _release(self, count: int) -> None:
        self._in_flight -= count
        self._room.notify_all()

    def _take_lead(self) -> bool:
        if self._sending:
            return False
        self._sending = True
        return True

    def _send_queued(self) -> None:
        """Write everything queued, including what other threads add meanwhile."""
        while True:
            with self._lock:
                requests, ids, frames = self._queued, self._queued_ids, self._frames
                if not requests and not frames:
                    self._sending = False
                    return
                self._queued, self._queued_ids, self._frames = [], [], []
            out = bytearray().join(frames) if frames else bytearray()
            for start, stop in _runs(ids, self._batch_size):
                self._encode_frame(requests[start:stop], ids[start:stop], out)
            try:
                self._sock.sendall(out)
            except OSError as exc:
                self._fail(ConnectionLost(f"connection lost: {exc}"))
                with self._lock:
                    self._sending = False
                return

    def _encode_frame(self, requests: list[Any], ids: list[int], out: bytearray) -> None:
        start = begin_frame(out)
        try:
            self._encode(requests, out)
        except CodecError:
            del out[start:]
            for request_id, request in zip(ids, requests, strict=True):
                start = begin_frame(out)
                try:
                    self._encode([request], out)
                except CodecError as exc:
                    del out[start:]
                    self._settle(request_id, [exc], failed=True)
                else:
                    end_frame(out, start, REQUEST, 1, request_id)
        else:
            end_frame(out, start, REQUEST, len(requests), ids[0])

    def _encode(self, requests: Sequence[Any], out: bytearray) -> None:
        try:
            self._codec.encode_batch(requests, out)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, CodecError):
                raise
            raise CodecError(f"cannot encode request: {exc}") from exc

    def _wait(self, waiter: _Waiter, timeout: float | None) -> Any:
        if not waiter.lock.acquire(timeout=-1 if timeout is None else timeout):
            with self._lock:
                for offset in range(0, waiter.count, self._batch_size):
                    self._waiters.pop(waiter.first_id + offset, None)
                self._release(waiter.fail(RequestTimeout(f"no reply within {timeout} s")))
        if waiter.error is not None:
            raise waiter.error
        return waiter.value

    # -- receiving (the reader thread) ----------------------------------------------------

    def _read_loop(self) -> None:
        buffer = bytearray(256 * 1024)
        view = memoryview(buffer)
        try:
            while True:
                received = self._sock.recv_into(buffer)
                if not received:
                    raise ConnectionLost("connection closed by peer")
                for frame in self._reader.feed(view[:received]):
                    self._on_frame(frame)
        except ConnectionLost as exc:
            self._fail(exc)
        except OSError as exc:
            self._fail(ConnectionLost(f"connection lost: {exc}"))
        except (ProtocolError, CodecError) as exc:
            self._fail(ProtocolError(f"invalid reply from server: {exc}"))
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def _on_frame(self, frame: Frame) -> None:
        if frame.kind == REPLY:
            _, replies = decode_replies(frame, self._decoder.decode_batch)
            self._settle(frame.first_id, replies)
        elif frame.kind == REPLY_IDS:
            ids, replies = decode_replies(frame, self._decoder.decode_batch)
            for request_id, reply in zip(ids, replies, strict=True):
                self._settle(request_id, [reply])
        elif frame.kind == ERROR:
            for request_id, message in decode_errors(frame):
                self._settle(request_id, [RemoteError(message)], failed=True)
        elif frame.kind == CONN_ERROR:
            raise ProtocolError(frame.payload.decode("utf-8", "replace"))
        else:
            raise ProtocolError(f"unexpected frame kind {frame.kind} from server")

    def _settle(self, first_id: int, outcomes: Sequence[Any], *, failed: bool = False) -> None:
        """Resolve consecutive requests from ``first_id``, each in whichever call waits for it.

        With ``failed``, the single outcome is an exception that fails the whole call it belongs to.
        """
        with self._lock:
            index = 0
            while index < len(outcomes):
                request_id = first_id + index
                waiter = self._waiters.get(request_id) or self._find(request_id)
                if waiter is None:  # a late reply to a call that timed out
                    index += 1
                    continue
                span = min(len(outcomes) - index, waiter.first_id + waiter.count - request_id)
                if failed:
                    done = waiter.fail(outcomes[index])
                else:
                    done = waiter.fill(request_id, outcomes[index : index + span])
                if waiter.remaining <= 0:
                    for offset in range(0, waiter.count, self._batch_size):
                        self._waiters.pop(waiter.first_id + offset, None)
                self._in_flight -= done
                index += span
            if self._in_flight + self._batch_size > self._max_in_flight:
                self._room.notify_all()

    def _find(self, request_id: int) -> _Waiter | None:
        """Find the batch holding ``request_id`` (rare: partial or error replies to a batch)."""
        for waiter in self._waiters.values():
            if waiter.first_id <= request_id < waiter.first_id + waiter.count:
                return waiter
        return None

    def _fail(self, error: BaseException) -> None:
        with self._lock:
            if self._failure is None:
                self._failure = error
            waiters = set(self._waiters.values())
            self._waiters.clear()
            for waiter in waiters:
                waiter.fail(renewed(error))
            self._queued.clear()
            self._queued_ids.clear()
            self._frames.clear()
            self._in_flight = 0
            self._room.notify_all()


def _runs(ids: list[int], limit: int) -> list[tuple[int, int]]:
    """Split queued ids into (start, stop) index ranges of consecutive ids, at most ``limit`` long."""
    runs, start = [], 0
    for index in range(1, len(ids) + 1):
        if index == len(ids) or ids[index] != ids[index - 1] + 1 or index - start == limit:
            runs.append((start, index))
            start = index
    return runs
