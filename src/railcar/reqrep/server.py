"""Request–response servers: a handler per request, per batch, or per numpy array, on any engine."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from railcar.codecs import Codec, CodecFactory, FixedSizeCodec, codec_factory
from railcar.engine import create_server
from railcar.engine.api import Address, Conn, Handler, Server
from railcar.errors import CodecError, ProtocolError
from railcar.proto.reqrep import (
    DEFAULT_MAX_FRAME,
    REPLY,
    REPLY_IDS,
    REQUEST,
    Frame,
    FrameReader,
    begin_frame,
    encode_conn_error,
    encode_errors,
    encode_run_errors,
    end_frame,
    frame_header,
    pack_ids,
)

log = logging.getLogger("railcar.reqrep")

Mode = Literal["item", "batch", "array"]
MODES: tuple[Mode, ...] = ("item", "batch", "array")
#: Requests of an async service in progress per connection before the server stops reading it.
DEFAULT_MAX_IN_PROGRESS = 10_000


@dataclass(slots=True)
class _Session:
    """One connection's frame reader and codec, and the requests failed since the last log line."""

    reader: FrameReader
    codec: Codec[Any]
    failed: int = 0
    first_failure: str = ""

    def note_failed(self, count: int, message: str) -> None:
        """Count ``count`` more requests answered with ERROR, the first of them for ``message``."""
        if not self.failed:
            self.first_failure = message
        self.failed += count

    def log_failed(self, peer: Address) -> None:
        """Log the requests failed since the last call in one line (one per request could flood the log)."""
        if self.failed:
            log.warning("requests from %s failed: %d; the first: %s", peer, self.failed, self.first_failure)
            self.failed = 0


@dataclass(slots=True)
class _AsyncSession(_Session):
    """A session of an async service: running tasks, frames waiting for room, requests in progress."""

    tasks: set[asyncio.Future[None]] = field(default_factory=set)  # the loop keeps only weak references
    waiting: deque[Frame] = field(default_factory=deque)
    in_progress: int = 0


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


_MAX_ID = 2**64


def _request_problem(frame: Frame) -> str | None:
    """Say why ``frame`` cannot be a request frame at all (a broken stream, not a bad request).

    Every codec spends at least one byte per request, so a count over the payload size is a
    lie; failing its ids one by one would turn 17 bytes into gigabytes of ERROR entries.
    """
    if frame.kind != REQUEST:
        return f"expected REQUEST frames, got kind {frame.kind}"
    if frame.count > len(frame.payload):
        return f"REQUEST frame says {frame.count} requests in {len(frame.payload)} bytes"
    if not frame.count and frame.payload:
        # No id to fail them with: answering would drop the bytes without a word.
        return f"REQUEST frame says 0 requests but carries {len(frame.payload)} bytes"
    if frame.first_id + frame.count > _MAX_ID:
        return f"REQUEST ids {frame.first_id}+{frame.count} pass 2**64"
    return None


def _framing_problem(frame: Frame, decoded: int, used: int) -> str:
    """Say why ``decoded`` requests using ``used`` bytes are not the whole of ``frame``."""
    unused = len(frame.payload) - used
    if decoded == frame.count:
        return f"frame has {unused} unused bytes after its {decoded} requests"
    left_over = f" ({unused} bytes left over)" if unused else ""
    return f"frame holds {decoded} whole requests{left_over}, its header says {frame.count}"


def _fail(session: _Session, frame: Frame, message: str, out: bytearray) -> None:
    """Fail every request of ``frame`` with ``message`` (one ERROR run), counted for the log line."""
    session.note_failed(frame.count, message)
    encode_run_errors(out, [(frame.first_id, frame.count, message)])


class ReqRepHandler(Handler):
    """Engine handler that decodes request frames, calls the service and writes reply frames.

    Every read is answered with one write: the replies to all the frames it completed.
    """

    def __init__(
        self,
        service: Callable[..., Any],
        codec: str | CodecFactory,
        mode: Mode = "item",
        max_frame: int = DEFAULT_MAX_FRAME,
        max_in_progress: int = DEFAULT_MAX_IN_PROGRESS,
    ) -> None:
        """Check the service against the mode; raises ValueError: unknown mode or codec, limit too low."""
        if max_frame < 64:
            raise ValueError(f"max_frame must be at least 64 bytes, not {max_frame}")
        if max_in_progress < 1:
            raise ValueError(f"max_in_progress must be at least 1, not {max_in_progress}")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        self._factory = codec_factory(codec) if isinstance(codec, str) else codec
        probe = self._factory()
        if mode == "array" and not isinstance(probe, FixedSizeCodec):
            raise ValueError(f"mode 'array' needs a fixed-size codec, not {probe.name!r}")
        self._service = service
        self._mode = mode
        self._is_async = inspect.iscoroutinefunction(service)
        if self._is_async and mode == "array":
            raise ValueError("mode 'array' needs a synchronous service")
        self._max_frame = max_frame
        self._max_in_progress = max_in_progress

    def on_open(self, conn: Conn) -> None:
        """Give the connection its own frame reader and codec."""
        session = _AsyncSession if self._is_async else _Session
        conn.context["reqrep"] = session(FrameReader(self._max_frame), self._factory())

    def on_data(self, conn: Conn, data: memoryview) -> None:
        """Answer every complete request frame in ``data`` with one write."""
        session: _Session = conn.context["reqrep"]
        error: ProtocolError | None = None
        try:
            frames = session.reader.feed(data)
        except ProtocolError as exc:
            frames, error = [], exc
        for index, frame in enumerate(frames):
            problem = _request_problem(frame)
            if problem is not None:
                frames, error = frames[:index], ProtocolError(problem)
                break
        out = bytearray()
        if frames:
            if self._is_async:
                self._start_later(conn, frames)
            elif self._mode == "array":
                self._answer_arrays(session, frames, out)
            else:
                for frame in frames:
                    self._answer(session, frame, out)
            session.log_failed(conn.peer)
        if error is not None:
            log.warning("protocol error from %s: %s", conn.peer, error)
            encode_conn_error(out, f"protocol error: {error}")
            conn.write(out)
            conn.close()
        elif out:
            conn.write(out)

    def on_eof(self, conn: Conn) -> bool:
        """Tell a peer that stopped sending inside a frame that the frame was cut short; then close."""
        session: _Session = conn.context["reqrep"]
        if session.reader.buffered:
            error = f"connection ended inside a frame ({session.reader.buffered} bytes of it received)"
            log.warning("protocol error from %s: %s", conn.peer, error)
            out = bytearray()
            encode_conn_error(out, f"protocol error: {error}")
            conn.write(out)
        return False

    def on_close(self, conn: Conn, exc: BaseException | None) -> None:
        """Cancel the requests of an async service still in progress: nobody is left to answer."""
        if self._is_async:
            session: _AsyncSession = conn.context["reqrep"]
            session.waiting.clear()
            for task in session.tasks:
                task.cancel()

    def _start_later(self, conn: Conn, frames: list[Frame]) -> None:
        """Queue ``frames`` for the async service and start what the limit of requests in progress allows."""
        session: _AsyncSession = conn.context["reqrep"]
        session.waiting.extend(frames)
        self._start_waiting(conn, session)

    def _start_waiting(self, conn: Conn, session: _AsyncSession) -> None:
        """Start waiting frames while their requests fit under the limit; read only while there is room.

        A frame is started whole, so one frame larger than the limit runs when it is alone.
        Pausing the connection's reading bounds its memory as output backpressure does: the
        frames of the last read wait here, and the rest stays in the kernel and with the peer.
        """
        waiting, limit = session.waiting, self._max_in_progress
        while waiting and (not session.in_progress or session.in_progress + waiting[0].count <= limit):
            frame = waiting.popleft()
            session.in_progress += frame.count
            task = asyncio.ensure_future(self._answer_later(conn, session, frame))
            session.tasks.add(task)
            task.add_done_callback(functools.partial(self._finished, conn, session, frame.count))
        if waiting or session.in_progress >= limit:
            conn.pause_reading()
        else:
            conn.resume_reading()

    def _finished(self, conn: Conn, session: _AsyncSession, count: int, task: asyncio.Future[None]) -> None:
        session.tasks.discard(task)
        session.in_progress -= count
        if not conn.closed:
            self._start_waiting(conn, session)

    def _answer(self, session: _Session, frame: Frame, out: bytearray) -> None:
        try:
            requests = self._decode(session.codec, frame)
        except CodecError:
            self._answer_decodable(session, frame, out)
            return
        if self._mode == "batch":
            try:
                replies = self._call_batch(requests)
            except Exception as exc:  # noqa: BLE001 - a failing request is answered, not dropped
                _fail(session, frame, _describe(exc), out)
                return
            self._encode_replies(session, frame, replies, out)
            return
        done: list[Any] = []
        try:
            # extend keeps the replies made before a raise, so no request is served twice.
            done.extend(map(self._service, requests))
        except Exception as exc:  # noqa: BLE001 - answer the others, each called once
            self._answer_rest(session, frame.first_id, requests, done, exc, out)
            return
        self._encode_replies(session, frame, done, out)

    def _answer_decodable(self, session: _Session, frame: Frame, out: bytearray) -> None:
        """Answer the requests of ``frame`` that decode one by one (the batch did not); fail the rest."""
        decoded = self._decode_each(session, frame, out)
        if decoded is None:
            return
        ids, requests, errors = decoded
        if self._mode == "item":
            ids, replies = self._serve_each(ids, requests, errors)
        else:
            try:
                replies = self._call_batch(requests) if requests else []
            except Exception as exc:  # noqa: BLE001 - a failing request is answered, not dropped
                errors += [(request_id, _describe(exc)) for request_id in ids]
                ids, replies = [], []
        self._encode_one_by_one(session, ids, replies, out, errors)

    def _call_batch(self, requests: list[Any]) -> list[Any]:
        """Return the batch service's replies; raises what it raises, or ValueError for a wrong count."""
        replies = list(self._service(requests))
        if len(replies) != len(requests):
            raise ValueError(f"batch handler returned {len(replies)} replies for {len(requests)}")
        return replies

    def _serve_each(
        self, ids: Sequence[int], requests: list[Any], errors: list[tuple[int, str]]
    ) -> tuple[list[int], list[Any]]:
        """Call the service once per request; return the ids and replies of those that did not raise.

        Each one that raised is appended to ``errors`` with its message.
        """
        served, replies = [], []
        for request_id, request in zip(ids, requests, strict=True):
            try:
                replies.append(self._service(request))
            except Exception as exc:  # noqa: BLE001 - a failing request is answered, not dropped
                errors.append((request_id, _describe(exc)))
            else:
                served.append(request_id)
        return served, replies

    def _answer_arrays(self, session: _Session, frames: list[Frame], out: bytearray) -> None:
        """Call the service once for the records of every frame of a read, and reply frame by frame.

        The more frames a read holds (the further the server is behind), the fewer
        service calls per request.
        """
        # The constructor checked the codec is fixed-size (isinstance on a Protocol is slow).
        codec: Any = session.codec
        itemsize = codec.itemsize
        whole = []
        for frame in frames:
            if len(frame.payload) == frame.count * itemsize:
                whole.append(frame)
            else:
                _fail(
                    session,
                    frame,
                    f"bad request: {len(frame.payload)} bytes are not {frame.count} {codec.name} records",
                    out,
                )
        if not whole:
            return
        payload = b"".join(frame.payload for frame in whole)  # one frame: join returns its payload as is
        try:
            replies = codec.encode_array(self._service(codec.decode_array(payload)))
            if len(replies) != len(payload):
                raise ValueError("array handler returned the wrong number of replies")
        except Exception as exc:  # noqa: BLE001 - a failing request is answered, not dropped
            for frame in whole:
                _fail(session, frame, _describe(exc), out)
            return
        view, offset = memoryview(replies), 0
        for frame in whole:
            size = len(frame.payload)
            out += frame_header(REPLY, frame.count, frame.first_id, size)
            out += view[offset : offset + size]
            offset += size

    @staticmethod
    def _decode(codec: Codec[Any], frame: Frame) -> list[Any]:
        requests, used = codec.decode_batch(frame.payload)
        if used != len(frame.payload) or len(requests) != frame.count:
            raise CodecError(_framing_problem(frame, len(requests), used))
        return requests

    @staticmethod
    def _decode_each(
        session: _Session, frame: Frame, out: bytearray
    ) -> tuple[list[int], list[Any], list[tuple[int, str]]] | None:
        """Decode ``frame``'s requests one by one: the ids and requests that decode, an error for each other.

        None once the whole frame is failed into ``out``: its framing is broken (its items do not
        add up to its header's count and its payload), so no request in it can be trusted.
        """
        items, used = session.codec.decode_each(frame.payload)
        if used != len(frame.payload) or len(items) != frame.count:
            _fail(session, frame, f"bad request: {_framing_problem(frame, len(items), used)}", out)
            return None
        ids, requests, errors = [], [], []
        for request_id, item in enumerate(items, frame.first_id):
            if isinstance(item, CodecError):
                errors.append((request_id, f"bad request: {item}"))
            else:
                ids.append(request_id)
                requests.append(item)
        return ids, requests, errors

    def _encode_replies(self, session: _Session, frame: Frame, replies: list[Any], out: bytearray) -> None:
        start = begin_frame(out)
        try:
            session.codec.encode_batch(replies, out)
        except (CodecError, TypeError, ValueError):
            del out[start:]
            self._encode_one_by_one(
                session, list(range(frame.first_id, frame.first_id + frame.count)), replies, out
            )
            return
        end_frame(out, start, REPLY, frame.count, frame.first_id)

    def _answer_rest(
        self,
        session: _Session,
        first_id: int,
        requests: list[Any],
        done: list[Any],
        failure: Exception,
        out: bytearray,
    ) -> None:
        """Finish a frame whose service raised ``failure`` at request ``len(done)``; call the rest once."""
        failed_at = len(done)
        errors = [(first_id + failed_at, _describe(failure))]
        rest_ids = range(first_id + failed_at + 1, first_id + len(requests))
        served, replies = self._serve_each(rest_ids, requests[failed_at + 1 :], errors)
        ids = [*range(first_id, first_id + failed_at), *served]
        self._encode_one_by_one(session, ids, done + replies, out, errors)

    @staticmethod
    def _encode_one_by_one(
        session: _Session,
        ids: list[int],
        replies: list[Any],
        out: bytearray,
        errors: list[tuple[int, str]] | None = None,
    ) -> None:
        """Encode replies that may fail to encode individually: REPLY_IDS for the good, ERROR for the rest."""
        errors = list(errors or [])
        good_ids, encoded = [], bytearray()
        for request_id, reply in zip(ids, replies, strict=True):
            mark = len(encoded)
            try:
                session.codec.encode_batch([reply], encoded)
            except (CodecError, TypeError, ValueError) as exc:
                del encoded[mark:]
                errors.append((request_id, f"cannot encode reply: {exc}"))
            else:
                good_ids.append(request_id)
        if good_ids:
            start = begin_frame(out)
            out += pack_ids(good_ids)
            out += encoded
            end_frame(out, start, REPLY_IDS, len(good_ids), good_ids[0])
        if errors:
            session.note_failed(len(errors), errors[0][1])
            encode_errors(out, errors)

    async def _answer_later(self, conn: Conn, session: _Session, frame: Frame) -> None:
        out = bytearray()
        decoded: tuple[Sequence[int], list[Any], list[tuple[int, str]]] | None
        try:
            requests = self._decode(session.codec, frame)
        except CodecError:
            decoded = self._decode_each(session, frame, out)
        else:
            decoded = range(frame.first_id, frame.first_id + frame.count), requests, []
        if decoded is not None:
            ids, requests, errors = decoded
            results = await asyncio.gather(*map(self._service, requests), return_exceptions=True)
            if errors or any(isinstance(r, BaseException) for r in results):
                self._encode_results(session, ids, results, out, errors)
            else:
                self._encode_replies(session, frame, list(results), out)
        session.log_failed(conn.peer)
        if not conn.closed:
            conn.write(out)

    def _encode_results(
        self,
        session: _Session,
        ids: Sequence[int],
        results: list[Any],
        out: bytearray,
        errors: list[tuple[int, str]],
    ) -> None:
        """Encode the replies among ``results`` and an ERROR entry for each exception among them."""
        served, replies = [], []
        for request_id, result in zip(ids, results, strict=True):
            if isinstance(result, BaseException):
                errors.append((request_id, _describe(result)))
            else:
                served.append(request_id)
                replies.append(result)
        self._encode_one_by_one(session, served, replies, out, errors)


def create_reqrep_server(
    service: Callable[..., Any],
    codec: str | CodecFactory = "int32",
    *,
    mode: Mode = "item",
    engine: str | None = None,
    max_frame: int = DEFAULT_MAX_FRAME,
    max_in_progress: int = DEFAULT_MAX_IN_PROGRESS,
    **options: Any,
) -> Server:
    """Make an unstarted request–response server; raises ValueError or EngineUnavailable.

    ``service`` takes one request and returns its reply (mode "item", sync or async),
    takes a list and returns a list (mode "batch"), or takes a numpy array of
    fixed-size records and returns one of the same length (mode "array"). An async
    service has at most ``max_in_progress`` requests of a connection in progress (or one
    larger frame); past that the connection is not read until some are answered.
    """
    handler = ReqRepHandler(service, codec, mode, max_frame, max_in_progress)
    if handler._is_async and (engine or "uvloop") not in ("asyncio", "uvloop"):
        raise ValueError("an async service needs the asyncio or uvloop engine")
    return create_server(handler, engine, **options)
