"""Answering request frames, sans I/O: bytes in, REQUEST frames out, replies and errors appended to bytes.

A ``Session`` is one connection's reader, codec and failure count; ``Answerer`` calls a
synchronous service per request (mode ``item``), per frame (``batch``) or once per read
for the numpy records of all its frames (``array``).  The helpers that decode requests
and encode replies are shared with the async services of ``reqrep.async_service``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from railcar.codecs import Codec
from railcar.errors import CodecError, ProtocolError
from railcar.proto.reqrep import (
    HELLO,
    MIN_LENGTH,
    REPLY,
    REPLY_IDS,
    Frame,
    FrameReader,
    begin_frame,
    encode_errors,
    encode_hello,
    encode_run_errors,
    end_frame,
    frame_header,
    framing_problem,
    hello_problem,
    pack_ids,
    request_problem,
)

log = logging.getLogger("railcar.reqrep")

Mode = Literal["item", "batch", "array"]
MODES: tuple[Mode, ...] = ("item", "batch", "array")

#: What a list of decoded requests comes with: their ids, and an error for each id that failed.
Decoded = tuple[Sequence[int], list[Any], list[tuple[int, str]]]


def describe(exc: BaseException) -> str:
    """Return the message an ERROR entry carries for a request whose service raised ``exc``."""
    return f"{type(exc).__name__}: {exc}"


@dataclass(slots=True)
class Session:
    """One connection's frame reader and codec, and the requests failed since the last log line."""

    reader: FrameReader
    codec: Codec[Any]
    fresh: bool = True  # no frame received yet: the only place for a HELLO
    failed: int = 0
    first_failure: str = ""
    last_read: float = 0.0  # time.monotonic() of the last bytes received (kept when timeouts are on)
    partial_since: float | None = None  # when the frame still incomplete began arriving

    @property
    def busy(self) -> bool:
        """True while requests received are not yet answered (never, for a sync service)."""
        return False

    def receive(self, data: bytes | memoryview, out: bytearray) -> tuple[list[Frame], ProtocolError | None]:
        """Return the REQUEST frames ``data`` completed, and the error that breaks the stream if one does.

        A HELLO opening the connection is answered into ``out``, and a REQUEST frame over
        the reader's limit fails its ids there (one ERROR run); the frames before a broken
        one are returned, to be answered before the connection closes.
        """
        try:
            frames = self.reader.feed(data)
        except ProtocolError as exc:
            return [], exc
        for index, frame in enumerate(frames):
            if frame.skipped or request_problem(frame) is not None:
                return self._sort_out(frames, index, out)
        if frames:
            self.fresh = False
        return frames, None

    def _sort_out(
        self, frames: list[Frame], start: int, out: bytearray
    ) -> tuple[list[Frame], ProtocolError | None]:
        """``receive`` from ``frames[start]`` on, where a frame is not a REQUEST to answer as usual."""
        requests = frames[:start]
        for index in range(start, len(frames)):
            frame = frames[index]
            if frame.kind == HELLO:
                problem = hello_problem(frame, first=self.fresh and not index)
                if problem is None:
                    encode_hello(out, self.reader.max_frame)
                    continue
            else:
                problem = request_problem(frame)
            if problem is not None:
                self.fresh = False
                return requests, ProtocolError(problem)
            if frame.skipped:
                size, limit = MIN_LENGTH + frame.skipped, self.reader.max_frame
                message = f"request frame of {size} bytes is over the server's limit of {limit} bytes"
                self.fail(frame, message, out)
            else:
                requests.append(frame)
        self.fresh = False
        return requests, None

    def fail(self, frame: Frame, message: str, out: bytearray) -> None:
        """Fail every request of ``frame`` with ``message`` (one ERROR run), counted for the log line."""
        self.note_failed(frame.count, message)
        encode_run_errors(out, [(frame.first_id, frame.count, message)])

    def note_failed(self, count: int, message: str) -> None:
        """Count ``count`` more requests answered with ERROR, the first of them for ``message``."""
        if not self.failed:
            self.first_failure = message
        self.failed += count

    def log_failed(self, peer: object) -> None:
        """Log the requests failed since the last call in one line (one per request could flood the log)."""
        if self.failed:
            log.warning("requests from %s failed: %d; the first: %s", peer, self.failed, self.first_failure)
            self.failed = 0


def decode_requests(codec: Codec[Any], frame: Frame) -> list[Any]:
    """Return the requests of ``frame``, decoded as one batch; raises CodecError."""
    requests, used = codec.decode_batch(frame.payload)
    if used != len(frame.payload) or len(requests) != frame.count:
        raise CodecError(framing_problem(frame, len(requests), used))
    return requests


def decode_one_by_one(session: Session, frame: Frame, out: bytearray) -> Decoded | None:
    """Decode ``frame``'s requests one by one: the ids and requests that decode, an error for each other.

    None once the whole frame is failed into ``out``: its framing is broken (its items do not
    add up to its header's count and its payload), so no request in it can be trusted.
    """
    items, used = session.codec.decode_each(frame.payload)
    if used != len(frame.payload) or len(items) != frame.count:
        session.fail(frame, f"bad request: {framing_problem(frame, len(items), used)}", out)
        return None
    ids, requests, errors = [], [], []
    for request_id, item in enumerate(items, frame.first_id):
        if isinstance(item, CodecError):
            errors.append((request_id, f"bad request: {item}"))
        else:
            ids.append(request_id)
            requests.append(item)
    return ids, requests, errors


def encode_replies(session: Session, frame: Frame, replies: list[Any], out: bytearray) -> None:
    """Append a REPLY frame answering every request of ``frame``; one by one if that cannot encode."""
    start = begin_frame(out)
    try:
        session.codec.encode_batch(replies, out)
    except (CodecError, TypeError, ValueError):
        del out[start:]
        encode_one_by_one(session, list(range(frame.first_id, frame.first_id + frame.count)), replies, out)
        return
    end_frame(out, start, REPLY, frame.count, frame.first_id)


def encode_one_by_one(
    session: Session,
    ids: Sequence[int],
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


def encode_results(
    session: Session, ids: Sequence[int], results: list[Any], out: bytearray, errors: list[tuple[int, str]]
) -> None:
    """Encode the replies among ``results`` and an ERROR entry for each exception among them."""
    served, replies = [], []
    for request_id, result in zip(ids, results, strict=True):
        if isinstance(result, BaseException):
            errors.append((request_id, describe(result)))
        else:
            served.append(request_id)
            replies.append(result)
    encode_one_by_one(session, served, replies, out, errors)


class Answerer:
    """Answers the REQUEST frames of a read with a synchronous service, every reply into one buffer."""

    def __init__(self, service: Callable[..., Any], mode: Mode) -> None:
        """Answer with ``service`` in ``mode``; the caller has checked that they fit the codec."""
        self._service = service
        self._mode = mode
        #: Append the answers to every frame of a read: ``answer(session, frames, out)``.
        self.answer: Callable[[Session, list[Frame], bytearray], None] = (
            self._answer_arrays if mode == "array" else self._answer_frames
        )

    def _answer_frames(self, session: Session, frames: list[Frame], out: bytearray) -> None:
        for frame in frames:
            self._answer(session, frame, out)

    def _answer(self, session: Session, frame: Frame, out: bytearray) -> None:
        try:
            requests = decode_requests(session.codec, frame)
        except CodecError:
            self._answer_decodable(session, frame, out)
            return
        if self._mode == "batch":
            try:
                replies = self._call_batch(requests)
            except Exception as exc:  # noqa: BLE001 - a failing request is answered, not dropped
                session.fail(frame, describe(exc), out)
                return
            encode_replies(session, frame, replies, out)
            return
        done: list[Any] = []
        try:
            # extend keeps the replies made before a raise, so no request is served twice.
            done.extend(map(self._service, requests))
        except Exception as exc:  # noqa: BLE001 - answer the others, each called once
            self._answer_rest(session, frame.first_id, requests, done, exc, out)
            return
        encode_replies(session, frame, done, out)

    def _answer_decodable(self, session: Session, frame: Frame, out: bytearray) -> None:
        """Answer the requests of ``frame`` that decode one by one (the batch did not); fail the rest."""
        decoded = decode_one_by_one(session, frame, out)
        if decoded is None:
            return
        ids, requests, errors = decoded
        if self._mode == "item":
            ids, replies = self._serve_each(ids, requests, errors)
        else:
            try:
                replies = self._call_batch(requests) if requests else []
            except Exception as exc:  # noqa: BLE001 - a failing request is answered, not dropped
                errors += [(request_id, describe(exc)) for request_id in ids]
                ids, replies = [], []
        encode_one_by_one(session, ids, replies, out, errors)

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
                errors.append((request_id, describe(exc)))
            else:
                served.append(request_id)
        return served, replies

    def _answer_rest(
        self,
        session: Session,
        first_id: int,
        requests: list[Any],
        done: list[Any],
        failure: Exception,
        out: bytearray,
    ) -> None:
        """Finish a frame whose service raised ``failure`` at request ``len(done)``; call the rest once."""
        failed_at = len(done)
        errors = [(first_id + failed_at, describe(failure))]
        rest_ids = range(first_id + failed_at + 1, first_id + len(requests))
        served, replies = self._serve_each(rest_ids, requests[failed_at + 1 :], errors)
        ids = [*range(first_id, first_id + failed_at), *served]
        encode_one_by_one(session, ids, done + replies, out, errors)

    def _answer_arrays(self, session: Session, frames: list[Frame], out: bytearray) -> None:
        """Call the service once for the records of every frame of a read, and reply frame by frame.

        The more frames a read holds (the further the server is behind), the fewer
        service calls per request.
        """
        # The handler checked the codec is fixed-size (isinstance on a Protocol is slow).
        codec: Any = session.codec
        itemsize = codec.itemsize
        whole = []
        for frame in frames:
            if len(frame.payload) == frame.count * itemsize:
                whole.append(frame)
            else:
                records = f"{frame.count} {codec.name} records"
                session.fail(frame, f"bad request: {len(frame.payload)} bytes are not {records}", out)
        if not whole:
            return
        payload = b"".join(frame.payload for frame in whole)  # one frame: join returns its payload as is
        try:
            replies = codec.encode_array(self._service(codec.decode_array(payload)))
            if len(replies) != len(payload):
                raise ValueError("array handler returned the wrong number of replies")
        except Exception as exc:  # noqa: BLE001 - a failing request is answered, not dropped
            for frame in whole:
                session.fail(frame, describe(exc), out)
            return
        view, offset = memoryview(replies), 0
        for frame in whole:
            size = len(frame.payload)
            out += frame_header(REPLY, frame.count, frame.first_id, size)
            out += view[offset : offset + size]
            offset += size
