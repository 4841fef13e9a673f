"""The request–response client core, sans I/O: ids, pending calls, frames out, replies in.

Both clients drive one ``ClientCore`` per client: the asyncio ``Client`` from its loop, the
threaded ``SyncClient`` under its lock.  The core owns everything they share: id allocation,
the pending table (single calls and batches), the in-flight window's count, request encoding
(a request that cannot be encoded, or that alone is over the frame limit, fails alone), frame
splitting at ``batch_size`` and at the send limit, reply dispatch, late-reply counting, and
failing one call, one batch or everything.  The clients keep only how a caller waits and
their I/O.

A caller waits on a *waiter*: anything with ``asyncio.Future``'s ``done``, ``set_result`` and
``set_exception``.  The core sets each waiter's outcome at most once and never blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from numpy.typing import NDArray

from railcar.clientcore.waiter import Waiter
from railcar.codecs import CodecFactory, FixedSizeCodec
from railcar.errors import (
    CodecError,
    ConnectionLost,
    FrameTooLarge,
    ProtocolError,
    RemoteError,
    RequestTimeout,
    renewed,
)
from railcar.proto.reqrep import (
    CONN_ERROR,
    ERROR,
    HEADER,
    HEADER_SIZE,
    HELLO,
    MIN_LENGTH,
    REPLY,
    REPLY_IDS,
    REQUEST,
    Frame,
    FrameReader,
    begin_frame,
    decode_errors,
    decode_hello,
    encode_hello,
    end_frame,
    frame_header,
    split_ids,
)

#: The smallest ``max_frame`` a client accepts: room for a header and a few requests.
MIN_FRAME: Final = 64


class Batch:
    """The pending replies of one call_many or call_array: results land in place, one waiter for all.

    A raw batch (call_array) keeps reply payloads undecoded and resolves to their bytes.
    """

    __slots__ = (
        "answered",
        "count",
        "first_id",
        "frame_ids",
        "parts",
        "raw",
        "remaining",
        "results",
        "waiter",
    )

    def __init__(self, waiter: Waiter, first_id: int, count: int, raw: bool) -> None:
        self.waiter = waiter
        self.first_id = first_id
        self.count = count
        self.remaining = count
        self.raw = raw
        self.results: list[Any] = [] if raw else [None] * count
        self.parts: list[tuple[int, bytes]] = []
        self.frame_ids: list[int] = []
        self.answered: set[int] | None = None  # offsets answered one by one (REPLY_IDS): a repeat is late

    def fill(self, offset: int, values: Sequence[Any]) -> None:
        """Store decoded replies from ``offset``; complete the waiter with the last."""
        self.results[offset : offset + len(values)] = values
        self.remaining -= len(values)
        if not self.remaining and not self.waiter.done():
            self.waiter.set_result(self.results)

    def fill_raw(self, offset: int, count: int, payload: bytes) -> None:
        """Store ``count`` undecoded replies from ``offset``; complete the waiter with the last."""
        if count == self.count:  # the whole batch in one frame: nothing to put together
            self.remaining = 0
            if not self.waiter.done():
                self.waiter.set_result(payload)
            return
        self.parts.append((offset, payload))
        self.remaining -= count
        if not self.remaining and not self.waiter.done():
            self.waiter.set_result(b"".join(part for _, part in sorted(self.parts)))


class ClientCore:
    """The state one client connection's callers share, with no I/O, clock or lock of its own."""

    def __init__(self, factory: CodecFactory, *, max_in_flight: int, batch_size: int, max_frame: int) -> None:
        """Make the codecs; raises ValueError for limits out of range (clients check before connecting)."""
        check_limits(max_in_flight, batch_size, max_frame)
        self.encoder = factory()
        self.decoder = factory()  # a reader thread decodes while callers encode
        # Checked once: isinstance against a runtime Protocol costs tens of microseconds.
        self.fixed = self.encoder if isinstance(self.encoder, FixedSizeCodec) else None
        self.max_in_flight = max_in_flight
        self.batch_size = batch_size
        self.max_frame = max_frame
        self.send_limit = max_frame
        self.next_id = 1
        self.in_flight = 0
        self.late_replies = 0
        self.calls: dict[int, Waiter] = {}
        # The first id of each frame of a batch -> (batch, the frame's offset in it, its requests).
        self.batches: dict[int, tuple[Batch, int, int]] = {}
        self.queued: list[Any] = []
        self.queued_ids: list[int] = []
        self.withdrawn = 0  # calls that ended while queued: take_calls leaves them out
        self.timeouts_in_a_row = 0  # calls timed out since the server last sent anything
        self.reader = self._new_reader()

    # -- the window ------------------------------------------------------------------------

    def has_room(self, count: int) -> bool:
        """True when ``count`` more requests fit the window; a larger batch fits an empty window."""
        return self.in_flight + count <= self.max_in_flight or not self.in_flight

    def connection_made(self) -> bytearray:
        """Start a new connection; return its first bytes: a HELLO asking the server for its limit."""
        self.reader = self._new_reader()
        self.send_limit = self.max_frame  # until this server says otherwise
        hello = bytearray()
        encode_hello(hello)
        return hello

    def _new_reader(self) -> FrameReader:
        # A REPLY frame over the limit names its ids in its header: they fail, the connection stays.
        return FrameReader(self.max_frame, skip_kinds=frozenset({REPLY}))

    # -- sending ---------------------------------------------------------------------------

    def queue_call(self, request: Any, waiter: Waiter) -> int:
        """Queue one request for the next ``take_queued`` and return its id; it counts as in flight."""
        request_id = self.next_id
        self.next_id = request_id + 1
        self.calls[request_id] = waiter
        self.queued.append(request)
        self.queued_ids.append(request_id)
        self.in_flight += 1
        return request_id

    def take_queued(self) -> bytearray:
        """Return the queued single calls as frames; a call that cannot be sent fails alone."""
        out, failed = self.encode_calls(*self.take_calls())
        for request_id, error in failed:
            self.fail_call(request_id, error)
        return out

    def take_calls(self) -> tuple[list[Any], list[int]]:
        """Take the queued single calls and their ids, less those that ended (timed out, cancelled) queued.

        Sending those would only make the server run work nobody waits for.
        """
        requests, ids = self.queued, self.queued_ids
        self.queued, self.queued_ids = [], []
        if self.withdrawn:  # rare: look at each id only then
            self.withdrawn = 0
            calls = self.calls
            kept = [index for index, request_id in enumerate(ids) if request_id in calls]
            requests, ids = [requests[index] for index in kept], [ids[index] for index in kept]
        return requests, ids

    def encode_calls(
        self, requests: list[Any], ids: list[int]
    ) -> tuple[bytearray, list[tuple[int, Exception]]]:
        """Encode queued calls into frames of consecutive ids; return them and (id, error) of each failure.

        Uses only the encoder, so a threaded client may run it outside its lock.
        """
        out = bytearray()
        failed: list[tuple[int, Exception]] = []
        for start, stop in _runs(ids, self.batch_size):
            self._encode_frame(requests[start:stop], ids[start], out, failed)
        return out, failed

    def _encode_frame(
        self, requests: Sequence[Any], first_id: int, out: bytearray, failed: list[tuple[int, Exception]]
    ) -> None:
        start = begin_frame(out)
        try:
            self.encoder.encode_batch(requests, out)
        except (CodecError, TypeError, ValueError) as exc:
            del out[start:]
            if len(requests) == 1:
                failed.append((first_id, _encode_error(exc)))
                return
            for offset, request in enumerate(requests):  # find the bad ones: each good one travels alone
                self._encode_frame([request], first_id + offset, out, failed)
            return
        size = len(out) - start
        if size > self.send_limit:
            del out[start:]
            if len(requests) == 1:
                failed.append((first_id, self._too_large(size)))
                return
            half = len(requests) // 2
            self._encode_frame(requests[:half], first_id, out, failed)
            self._encode_frame(requests[half:], first_id + half, out, failed)
            return
        end_frame(out, start, REQUEST, len(requests), first_id)

    def encode_batch(self, requests: Sequence[Any]) -> list[tuple[int, bytes | bytearray | memoryview]]:
        """Encode a batch as (requests, payload) frames of at most ``batch_size`` requests, within the limit.

        Raises CodecError for a request the codec refuses and FrameTooLarge for one that
        alone is over the limit: a batch succeeds or fails whole.
        """
        payloads: list[tuple[int, bytes | bytearray | memoryview]] = []
        for start in range(0, len(requests), self.batch_size):
            self._encode_payload(requests[start : start + self.batch_size], start, payloads)
        return payloads

    def _encode_payload(
        self, requests: Sequence[Any], index: int, payloads: list[tuple[int, bytes | bytearray | memoryview]]
    ) -> None:
        out = bytearray()
        try:
            self.encoder.encode_batch(requests, out)
        except CodecError:
            raise
        except (TypeError, ValueError) as exc:
            raise _encode_error(exc) from exc
        if len(out) + HEADER_SIZE <= self.send_limit:
            payloads.append((len(requests), out))
        elif len(requests) == 1:
            raise self._too_large(len(out) + HEADER_SIZE, f"request {index} ")
        else:
            half = len(requests) // 2
            self._encode_payload(requests[:half], index, payloads)
            self._encode_payload(requests[half:], index + half, payloads)

    def encode_array(self, records: NDArray[Any]) -> list[tuple[int, bytes | bytearray | memoryview]]:
        """Encode fixed-size records as (records, payload) frames; raises CodecError or FrameTooLarge."""
        codec = self.fixed
        if codec is None:
            raise CodecError(f"call_array needs a fixed-size codec, not {self.encoder.name!r}")
        per_frame = min(self.batch_size, (self.send_limit - HEADER_SIZE) // codec.itemsize)
        if per_frame < 1:
            raise self._too_large(HEADER_SIZE + codec.itemsize, "one record ")
        encoded = codec.encode_array(records)
        count = len(records)
        if count <= per_frame:
            return [(count, encoded)]
        step = per_frame * codec.itemsize
        view = memoryview(encoded)
        return [
            (min(per_frame, count - n), view[n * codec.itemsize : n * codec.itemsize + step])
            for n in range(0, count, per_frame)
        ]

    def start_batch(
        self, payloads: list[tuple[int, bytes | bytearray | memoryview]], waiter: Waiter, raw: bool = False
    ) -> tuple[Batch, list[bytes | bytearray | memoryview]]:
        """Register an encoded batch; return it and its frames as header, payload, header, payload, …."""
        first_id = self.next_id
        count = payloads[0][0] if len(payloads) == 1 else sum(n for n, _ in payloads)
        self.next_id = first_id + count
        batch = Batch(waiter, first_id, count, raw)
        chunks: list[bytes | bytearray | memoryview] = []
        batches, offset = self.batches, 0
        for requests, payload in payloads:
            frame_id = first_id + offset
            batches[frame_id] = (batch, offset, requests)
            batch.frame_ids.append(frame_id)
            chunks.append(frame_header(REQUEST, requests, frame_id, len(payload)))
            chunks.append(payload)
            offset += requests
        self.in_flight += count
        return batch, chunks

    def _too_large(self, size: int, what: str = "") -> FrameTooLarge:
        limit = self.send_limit
        whose = "the server's limit" if limit < self.max_frame else "max_frame"
        return FrameTooLarge(f"{what}needs a frame of {size} bytes, over {whose} of {limit} bytes")

    # -- receiving -------------------------------------------------------------------------

    def receive(self, data: bytes | bytearray | memoryview) -> None:
        """Settle every reply ``data`` completes; raises ProtocolError, or ConnectionLost for a CONN_ERROR."""
        self.timeouts_in_a_row = 0  # the server is alive
        view = memoryview(data)
        reader = self.reader
        if not reader.buffered:
            start = self._settle_in_place(view)
            if start == len(view):  # the usual read: whole reply frames, all settled in place
                return
            view = view[start:]
        for frame in reader.feed(view):
            self._on_frame(frame)

    def _settle_in_place(self, view: memoryview) -> int:
        """Settle the REPLY frames wholly within ``view`` without copying them; return where they stop.

        The usual read holds nothing else.  Whatever does not fit (another kind, a frame cut
        short, one over the limit) is left to the FrameReader, which raises what it deserves.
        """
        offset, end = 0, len(view)
        unpack, limit = HEADER.unpack_from, self.max_frame
        while end - offset >= HEADER_SIZE:
            length, kind, count, first_id = unpack(view, offset)
            stop = offset + 4 + length
            if kind != REPLY or stop > end or not MIN_LENGTH <= length <= limit:
                break
            self._on_reply(first_id, count, view[offset + HEADER_SIZE : stop])
            offset = stop
        return offset

    def _on_frame(self, frame: Frame) -> None:
        kind = frame.kind
        if kind == REPLY:
            if frame.skipped:
                size = frame.skipped + HEADER_SIZE
                error = FrameTooLarge(
                    f"reply frame of {size} bytes is over max_frame ({self.max_frame} bytes)"
                )
                self.fail_ids(frame.first_id, frame.count, error)
            else:
                self._on_reply(frame.first_id, frame.count, frame.payload)
        elif kind == REPLY_IDS:
            self._on_reply_ids(frame)
        elif kind == ERROR:
            for first_id, count, message in decode_errors(frame, widest=self.batch_size):
                self.fail_ids(first_id, count, RemoteError(message))
        elif kind == HELLO:
            self.send_limit = min(self.max_frame, decode_hello(frame))
        elif kind == CONN_ERROR:
            raise ConnectionLost(f"server closed the connection: {frame.payload.decode('utf-8', 'replace')}")
        else:
            raise ProtocolError(f"unexpected frame kind {kind} from server")

    def _on_reply(self, first_id: int, count: int, payload: bytes | memoryview) -> None:
        entry = self.batches.get(first_id)
        if entry is not None:
            batch, offset, requests = entry
            if count != requests:
                raise ProtocolError(f"reply frame holds {count} replies for a frame of {requests} requests")
            if batch.answered:  # some members came one by one (rare): settle each, repeats are late
                replies = self._decode(payload, count)
                size = self.fixed.itemsize if batch.raw and self.fixed is not None else 0
                for index, reply in enumerate(replies):
                    record = bytes(payload[index * size : (index + 1) * size]) if size else None
                    self._settle_stray(first_id + index, reply, record)
                return
            del self.batches[first_id]
            self.in_flight -= count
            if batch.raw:
                assert self.fixed is not None  # only call_array makes raw batches
                if len(payload) != count * self.fixed.itemsize:
                    raise ProtocolError(f"reply frame size does not match its {count} records")
                batch.fill_raw(offset, count, bytes(payload))
            else:
                batch.fill(offset, self._decode(payload, count))
            return
        replies = self._decode(payload, count)
        calls = self.calls
        for request_id, reply in enumerate(replies, first_id):
            waiter = calls.pop(request_id, None)
            if waiter is None:
                self._settle_stray(request_id, reply, None)
                continue
            self.in_flight -= 1
            if not waiter.done():
                waiter.set_result(reply)

    def _on_reply_ids(self, frame: Frame) -> None:
        ids, payload = split_ids(frame)
        replies = self._decode(payload, len(ids))
        itemsize = self.fixed.itemsize if self.fixed is not None else 0
        calls = self.calls
        for index, (request_id, reply) in enumerate(zip(ids, replies, strict=True)):
            waiter = calls.pop(request_id, None)
            if waiter is None:
                record = payload[index * itemsize : (index + 1) * itemsize] if itemsize else None
                self._settle_stray(request_id, reply, record)
                continue
            self.in_flight -= 1
            if not waiter.done():
                waiter.set_result(reply)

    def _decode(self, payload: bytes | memoryview, count: int) -> list[Any]:
        try:
            replies, used = self.decoder.decode_batch(payload)
        except CodecError as exc:
            raise ProtocolError(f"undecodable reply: {exc}") from exc
        if used != len(payload) or len(replies) != count:
            raise ProtocolError(f"reply frame holds {len(replies)} replies for {count} ids")
        return replies

    def _settle_stray(self, request_id: int, reply: Any, record: bytes | None) -> None:
        """Settle a reply that is no single call's: a member of a batch answered alone, or a late one."""
        found = self._batch_of(request_id)
        if found is None:
            self.late_replies += 1
            return
        batch, offset = found
        frame_id = max(frame for frame in batch.frame_ids if frame <= request_id)
        if batch.answered is None:
            batch.answered = set()
        if offset in batch.answered or frame_id not in self.batches:  # answered already
            self.late_replies += 1
            return
        if batch.raw and record is None:
            raise ProtocolError("a record of a call_array answered in a frame of its own kind")
        batch.answered.add(offset)
        self.in_flight -= 1
        if batch.raw:
            assert record is not None
            batch.fill_raw(offset, 1, record)
        else:
            batch.fill(offset, [reply])
        if not batch.remaining:
            for frame in batch.frame_ids:
                self.batches.pop(frame, None)

    def _batch_of(self, request_id: int) -> tuple[Batch, int] | None:
        """The pending batch holding ``request_id`` and its offset there (rare: a partial or error reply)."""
        for batch, _, _ in self.batches.values():
            if batch.first_id <= request_id < batch.first_id + batch.count:
                return batch, request_id - batch.first_id
        return None

    # -- failing ---------------------------------------------------------------------------

    def fail_ids(self, first_id: int, count: int, error: BaseException) -> None:
        """Fail ``count`` ids from ``first_id``: each single call, each batch once; count the rest late."""
        request_id, stop = first_id, first_id + count
        while request_id < stop:
            if self.fail_call(request_id, error):
                request_id += 1
                continue
            found = self._batch_of(request_id)
            if found is None:
                self.late_replies += 1
                request_id += 1
                continue
            batch = found[0]
            self.fail_batch(batch, error)
            request_id = batch.first_id + batch.count  # its other ids are not late: the batch failed once

    def fail_call(self, request_id: int, error: BaseException) -> bool:
        """Fail one single call (a timeout, a cancellation) and free its slot; False when it is not pending.

        A reply that arrives for it later is counted in ``late_replies`` and dropped.
        """
        waiter = self.calls.pop(request_id, None)
        if waiter is None:
            return False
        self.in_flight -= 1
        if self.queued_ids and request_id >= self.queued_ids[0]:  # calls queue in id order
            self.withdrawn += 1
        if isinstance(error, RequestTimeout):
            self.timeouts_in_a_row += 1
        if not waiter.done():
            waiter.set_exception(error)
        return True

    def fail_batch(self, batch: Batch, error: BaseException) -> None:
        """Fail a whole batch: forget its frames (their replies then count as late) and free its slots."""
        for frame_id in batch.frame_ids:
            self.batches.pop(frame_id, None)
        self.in_flight -= batch.remaining
        batch.remaining = 0
        if isinstance(error, RequestTimeout):
            self.timeouts_in_a_row += 1
        if not batch.waiter.done():
            batch.waiter.set_exception(error)

    def fail_all(self, error: BaseException) -> None:
        """Fail every pending call and batch (each with its own copy of ``error``) and drop what is queued."""
        calls, self.calls = self.calls, {}
        for waiter in calls.values():
            if not waiter.done():
                waiter.set_exception(renewed(error))
        batches, self.batches = self.batches, {}
        for batch, _, _ in batches.values():
            batch.remaining = 0  # a timeout or cancellation after the loss frees nothing twice
            if not batch.waiter.done():
                batch.waiter.set_exception(renewed(error))
        self.queued, self.queued_ids = [], []
        self.withdrawn = 0
        self.in_flight = 0


class ClientState:
    """What both clients report the same way: their core's window, late replies, send limit, and closing."""

    _core: ClientCore
    _closed: bool

    #: Why the last connection attempt failed or the last connection was lost; None if neither happened yet.
    last_error: BaseException | None = None

    @property
    def in_flight(self) -> int:
        """Requests sent or queued that have no reply yet (timed-out and cancelled ones excluded)."""
        return self._core.in_flight

    @property
    def late_replies(self) -> int:
        """Replies that came after their call had timed out, been cancelled or failed: dropped."""
        return self._core.late_replies

    @property
    def frame_limit(self) -> int:
        """The largest frame this client sends: its ``max_frame``, or the server's limit if lower."""
        return self._core.send_limit

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called, or the connection was lost for good."""
        return self._closed

    @property
    def timeouts_in_a_row(self) -> int:
        """Calls timed out since the server last sent anything: not 0 while it may be stalled."""
        return self._core.timeouts_in_a_row


def check_limits(max_in_flight: int, batch_size: int, max_frame: int) -> None:
    """Raise ValueError unless the window, batch size and frame limit are in range."""
    if max_in_flight < 1 or batch_size < 1 or max_frame < MIN_FRAME:
        raise ValueError(
            f"need max_in_flight >= 1, batch_size >= 1 and max_frame >= {MIN_FRAME} "
            f"(got {max_in_flight}, {batch_size}, {max_frame})"
        )


def _encode_error(exc: Exception) -> CodecError:
    return exc if isinstance(exc, CodecError) else CodecError(f"cannot encode request: {exc}")


def _runs(ids: list[int], limit: int) -> list[tuple[int, int]]:
    """Split queued ids into (start, stop) index ranges of consecutive ids, at most ``limit`` long."""
    if 0 < len(ids) <= limit and ids[-1] - ids[0] == len(ids) - 1:
        return [(0, len(ids))]  # the usual case (ids only grow): one run, found without a loop
    runs, start = [], 0
    for index in range(1, len(ids) + 1):
        if index == len(ids) or ids[index] != ids[index - 1] + 1 or index - start == limit:
            runs.append((start, index))
            start = index
    return runs
