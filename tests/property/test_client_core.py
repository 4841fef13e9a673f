"""Any mix of replies, error runs, timeouts, cancellations and lost connections ends each request once.

A fake server (n -> n + 1 over int32) answers the REQUEST frames a ``ClientCore`` sends, in any
order and any mix of REPLY, REPLY_IDS and ERROR frames, resends earlier answers and answers calls
that already ended; its bytes reach the core cut anywhere.  A model says what each waiter should
hold, how many requests are in flight and how many replies came late.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from railcar.codecs import codec_factory
from railcar.errors import ConnectionLost, FrameTooLarge, RemoteError, RequestTimeout
from railcar.proto.reqrep import (
    ERROR,
    HEADER_SIZE,
    HELLO,
    REPLY,
    REPLY_IDS,
    REQUEST,
    FrameReader,
    append_frame,
    encode_conn_error,
    encode_hello,
    encode_run_errors,
    pack_ids,
)
from railcar.reqrep.core import Batch, ClientCore

INT32 = codec_factory("int32")
NUMBERS = st.integers(-1000, 1000)
MESSAGES = st.text(alphabet="abcé -", max_size=8)
REPLY_ID_SIZE = 12  # a REPLY_IDS frame spends a u64 id and an int32 per reply
HELLO_FRAME = struct.pack("<IBIQ", HEADER_SIZE - 4, HELLO, 0, 0)


class RecordingWaiter:
    """An asyncio.Future-like waiter that keeps its outcome; a second outcome fails the test."""

    def __init__(self) -> None:
        self.outcomes: list[tuple[str, Any]] = []

    def done(self) -> bool:
        return bool(self.outcomes)

    def set_result(self, result: Any, /) -> None:
        assert not self.outcomes, f"second outcome {result!r} after {self.outcomes!r}"
        # A batch's list is the core's: copy it, so a later write to it shows as a difference.
        self.outcomes.append(("result", list(result) if isinstance(result, list) else result))

    def set_exception(self, exception: BaseException, /) -> None:
        assert not self.outcomes, f"second outcome {exception!r} after {self.outcomes!r}"
        self.outcomes.append(("error", exception))

    def cancel(self) -> None:
        assert not self.outcomes
        self.outcomes.append(("cancelled", None))


@dataclass
class Call:
    """One single call or batch as the model sees it."""

    kind: str  # "single", "batch" or "raw"
    waiter: RecordingWaiter
    ids: range
    batch: Batch | None = None
    replies: dict[int, int] = field(default_factory=dict)  # a batch's members answered so far
    expected: tuple[str, Any, Any] | None = None  # ("result", value, None) or ("error", type, message)

    @property
    def in_flight(self) -> int:
        return 0 if self.expected is not None else len(self.ids) - len(self.replies)


@dataclass
class Sent:
    """A REQUEST frame on the current connection, as the server read it."""

    first_id: int
    requests: list[int]
    unanswered: set[int]


@dataclass
class Answer:
    """A frame the server wrote: what the model applies once its last byte reaches the core."""

    kind: int
    ids: list[int]
    values: list[int]
    message: str
    data: bytes
    limit: int = 0


def request_frames(data: bytes) -> list[Sent]:
    frames = FrameReader().feed(data)
    assert all(frame.kind == REQUEST for frame in frames)
    return [
        Sent(
            frame.first_id,
            list(struct.unpack(f"<{frame.count}i", frame.payload)),
            set(range(frame.first_id, frame.first_id + frame.count)),
        )
        for frame in frames
    ]


def frame_sizes(data: bytes) -> list[int]:
    sizes, offset = [], 0
    while offset < len(data):
        (length,) = struct.unpack_from("<I", data, offset)
        sizes.append(4 + length)
        offset += 4 + length
    return sizes


def int32s(values: list[int]) -> bytes:
    return struct.pack(f"<{len(values)}i", *values)


class ClientCoreMachine(RuleBasedStateMachine):
    """Drives one ClientCore as both clients do, against a fake server and a model."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Call] = []
        self.owner: dict[int, Call] = {}
        self.request_of: dict[int, int] = {}
        self.queued: list[int] = []
        self.sent: list[Sent] = []
        self.history: list[Answer] = []
        self.outbox = bytearray()
        self.in_transit: list[tuple[int, Answer]] = []  # (end offset in the stream, answer)
        self.written = self.delivered = 0
        self.next_id = 1
        self.late = 0

    @initialize(
        batch_size=st.integers(3, 5),
        max_frame=st.sampled_from([64, 80, 4096]),
    )
    def start(self, batch_size: int, max_frame: int) -> None:
        self.core = ClientCore(INT32, max_in_flight=1000, batch_size=batch_size, max_frame=max_frame)
        self.send_limit = max_frame
        self.connect()

    def connect(self) -> None:
        hello = bytes(self.core.connection_made())
        assert hello == HELLO_FRAME
        self.send_limit = self.core.max_frame
        self.sent, self.history, self.outbox, self.in_transit = [], [], bytearray(), []
        self.written = self.delivered = 0

    # -- the client ------------------------------------------------------------------------

    @rule(requests=st.lists(NUMBERS, min_size=1, max_size=7))
    def queue_calls(self, requests: list[int]) -> None:
        for request in requests:
            waiter = RecordingWaiter()
            request_id = self.core.queue_call(request, waiter)
            assert request_id == self.next_id
            self.next_id += 1
            call = Call("single", waiter, range(request_id, request_id + 1))
            self.add(call, [request])
            self.queued.append(request_id)

    @rule()
    def take_queued(self) -> None:
        out = bytes(self.core.take_queued())
        queued, self.queued = self.queued, []
        frames = request_frames(out)
        for size in frame_sizes(out):
            assert size <= self.send_limit
        sent_ids = [i for frame in frames for i in sorted(frame.unanswered)]
        fits = self.send_limit >= HEADER_SIZE + 4
        assert sent_ids == (queued if fits else [])
        self.check_sent(frames)
        for request_id in set(queued) - set(sent_ids):
            self.end(self.owner[request_id], ("error", FrameTooLarge, None))

    @rule(requests=st.lists(NUMBERS, min_size=1, max_size=12), raw=st.booleans())
    def start_batch(self, requests: list[int], raw: bool) -> None:
        core = self.core
        if self.send_limit < HEADER_SIZE + 4:
            with pytest.raises(FrameTooLarge):
                core.encode_array(np.array(requests, dtype="<i4")) if raw else core.encode_batch(requests)
            return
        payloads = core.encode_array(np.array(requests, dtype="<i4")) if raw else core.encode_batch(requests)
        for count, payload in payloads:
            assert 1 <= count <= core.batch_size
            assert HEADER_SIZE + len(payload) <= self.send_limit
        waiter = RecordingWaiter()
        batch, chunks = core.start_batch(payloads, waiter, raw=raw)
        assert batch.first_id == self.next_id
        ids = range(self.next_id, self.next_id + len(requests))
        self.next_id += len(requests)
        self.add(Call("raw" if raw else "batch", waiter, ids, batch), requests)
        self.check_sent(request_frames(b"".join(bytes(chunk) for chunk in chunks)))

    def add(self, call: Call, requests: list[int]) -> None:
        self.calls.append(call)
        for request_id, request in zip(call.ids, requests, strict=True):
            self.owner[request_id] = call
            self.request_of[request_id] = request

    def check_sent(self, frames: list[Sent]) -> None:
        for frame in frames:
            ids = range(frame.first_id, frame.first_id + len(frame.requests))
            assert 1 <= len(ids) <= self.core.batch_size
            assert frame.requests == [self.request_of[i] for i in ids]
            owners = [self.owner[i] for i in ids]
            assert all(call.kind == "single" for call in owners) or all(call is owners[0] for call in owners)
        self.sent.extend(frames)

    @precondition(lambda self: self.calls)
    @rule(data=st.data(), cancel=st.booleans())
    def time_out_or_cancel(self, data: st.DataObject, cancel: bool) -> None:
        """A timer fires (maybe for a call that already ended) or a caller gives up waiting."""
        call = data.draw(st.sampled_from(self.calls))
        if cancel:
            if call.expected is not None:
                return
            call.waiter.cancel()
            error: BaseException = ConnectionLost("cancelled")
        else:
            error = RequestTimeout("no reply within 1 s")
        if call.kind == "single":
            assert self.core.fail_call(call.ids[0], error) is (call.expected is None)
            if call.ids[0] in self.queued:  # ended before it was sent: never sent
                self.queued.remove(call.ids[0])
        else:
            assert call.batch is not None
            self.core.fail_batch(call.batch, error)
        if cancel:
            self.end(call, ("cancelled", None, None))
        else:
            self.end(call, ("error", RequestTimeout, "no reply within 1 s"))

    @rule(conn_error=st.booleans())
    def lose_connection(self, conn_error: bool) -> None:
        """The connection ends (the server may say why first); then the client connects again."""
        if conn_error:
            encode_conn_error(self.outbox, "going away")
            with pytest.raises(ConnectionLost, match="going away"):
                self.core.receive(bytes(self.outbox))
            self.arrived(self.written)
        self.lose()
        self.connect()

    def lose(self) -> None:
        self.core.fail_all(ConnectionLost("lost"))
        for call in self.calls:
            self.end(call, ("error", ConnectionLost, "lost"))
        self.queued = []

    def end(self, call: Call, expected: tuple[str, Any, Any]) -> None:
        if call.expected is None:
            call.expected = expected

    # -- the server ------------------------------------------------------------------------

    @precondition(lambda self: any(frame.unanswered for frame in self.sent))
    @rule(data=st.data(), message=MESSAGES)
    def answer(self, data: st.DataObject, message: str) -> None:
        frame = data.draw(st.sampled_from([frame for frame in self.sent if frame.unanswered]))
        ids = sorted(frame.unanswered)
        whole = len(ids) == len(frame.requests)
        how = data.draw(st.sampled_from(["reply", "reply_ids", "error"] if whole else ["reply_ids", "error"]))
        out = bytearray()
        if how == "reply":
            values = [self.request_of[i] + 1 for i in ids]
            append_frame(out, REPLY, len(ids), ids[0], int32s(values))
            answer = Answer(REPLY, ids, values, "", bytes(out))
        elif how == "reply_ids":
            most = (self.core.max_frame - HEADER_SIZE) // REPLY_ID_SIZE
            chosen = data.draw(st.lists(st.sampled_from(ids), min_size=1, max_size=most, unique=True))
            values = [self.request_of[i] + 1 for i in chosen]
            append_frame(out, REPLY_IDS, len(chosen), chosen[0], pack_ids(chosen) + int32s(values))
            answer = Answer(REPLY_IDS, chosen, values, "", bytes(out))
        else:  # a run of consecutive unanswered ids
            start = data.draw(st.sampled_from(ids))
            stop = start + 1
            while stop in frame.unanswered and data.draw(st.booleans()):
                stop += 1
            chosen = list(range(start, stop))
            encode_run_errors(out, [(start, len(chosen), message)])
            answer = Answer(ERROR, chosen, [], message, bytes(out))
        frame.unanswered -= set(answer.ids)
        self.history.append(answer)
        self.write(answer)

    @precondition(lambda self: self.history)
    @rule(data=st.data())
    def resend(self, data: st.DataObject) -> None:
        """A server bug: an answer again (its calls ended or were answered: every reply in it is late)."""
        self.write(data.draw(st.sampled_from(self.history)))

    @rule(limit=st.integers(HEADER_SIZE, HEADER_SIZE + 3) | st.integers(HEADER_SIZE + 4, 100))
    def hello(self, limit: int) -> None:
        """The server states its frame limit: under 21 bytes not even one int32 request fits."""
        out = bytearray()
        encode_hello(out, limit)
        self.write(Answer(HELLO, [], [], "", bytes(out), limit))

    def write(self, answer: Answer) -> None:
        self.outbox += answer.data
        self.written += len(answer.data)
        self.in_transit.append((self.written, answer))

    @precondition(lambda self: self.outbox)
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        """Some of what the server wrote arrives, cut anywhere, in one or more reads."""
        size = data.draw(st.integers(1, len(self.outbox)), label="bytes")
        cuts = data.draw(st.lists(st.integers(0, size), max_size=3).map(sorted), label="cuts")
        chunk = bytes(self.outbox[:size])
        del self.outbox[:size]
        for start, stop in zip([0, *cuts], [*cuts, size], strict=True):
            self.core.receive(chunk[start:stop])
        self.arrived(self.delivered + size)

    def arrived(self, delivered: int) -> None:
        self.delivered = delivered
        while self.in_transit and self.in_transit[0][0] <= delivered:
            self.apply(self.in_transit.pop(0)[1])

    def apply(self, answer: Answer) -> None:
        if answer.kind == HELLO:
            self.send_limit = min(self.core.max_frame, answer.limit)
        elif answer.kind == ERROR:
            call = self.owner[answer.ids[0]]
            if call.kind != "single":  # a run within a batch's frame fails the batch once
                if call.expected is None:
                    call.expected = ("error", RemoteError, answer.message)
                else:
                    self.late += len(answer.ids)
                return
            for request_id in answer.ids:
                call = self.owner[request_id]
                if call.expected is None:
                    call.expected = ("error", RemoteError, answer.message)
                else:
                    self.late += 1
        else:
            for request_id, value in zip(answer.ids, answer.values, strict=True):
                self.reply(request_id, value)

    def reply(self, request_id: int, value: int) -> None:
        call = self.owner[request_id]
        if call.expected is not None or request_id in call.replies:
            self.late += 1
            return
        call.replies[request_id] = value
        if len(call.replies) < len(call.ids):
            return
        values = [call.replies[i] for i in call.ids]
        if call.kind == "single":
            call.expected = ("result", values[0], None)
        elif call.kind == "batch":
            call.expected = ("result", values, None)
        else:
            call.expected = ("result", int32s(values), None)

    # -- the checks ------------------------------------------------------------------------

    @invariant()
    def outcomes_match_the_model(self) -> None:
        if not hasattr(self, "core"):
            return
        for call in self.calls:
            outcomes = call.waiter.outcomes
            if call.expected is None:
                assert outcomes == [], (call.kind, call.ids, outcomes)
                continue
            assert len(outcomes) == 1, (call.kind, call.ids, call.expected)
            (how, got), (expected_how, expected, message) = outcomes[0], call.expected
            assert how == expected_how, (call.kind, call.ids, outcomes, call.expected)
            if how == "result":
                assert got == expected, (call.kind, call.ids)
            elif how == "error":
                assert isinstance(got, expected), (call.kind, call.ids, got)
                assert message is None or str(got) == message
        assert self.core.in_flight == sum(call.in_flight for call in self.calls) >= 0
        assert self.core.late_replies == self.late
        assert self.core.send_limit == self.send_limit

    def teardown(self) -> None:
        if not hasattr(self, "core"):
            return
        self.lose()
        self.outcomes_match_the_model()
        assert all(len(call.waiter.outcomes) == 1 for call in self.calls)
        assert self.core.in_flight == 0
        assert not self.core.calls
        assert not self.core.batches


TestClientCore = ClientCoreMachine.TestCase
TestClientCore.settings = settings(
    max_examples=250, stateful_step_count=40, deadline=None, report_multiple_bugs=False
)


@settings(max_examples=200, deadline=None)
@given(
    singles=st.lists(NUMBERS, max_size=8),
    batch=st.lists(NUMBERS, min_size=1, max_size=12),
    raw=st.booleans(),
    data=st.data(),
)
def test_any_split_gives_the_same_outcomes(
    singles: list[int], batch: list[int], raw: bool, data: st.DataObject
) -> None:
    def run(cuts: list[int]) -> tuple[list[list[tuple[str, Any]]], int, int]:
        core = ClientCore(INT32, max_in_flight=100, batch_size=4, max_frame=64)
        core.connection_made()
        waiters = [RecordingWaiter() for _ in range(len(singles) + 1)]
        for request, waiter in zip(singles, waiters, strict=False):
            core.queue_call(request, waiter)
        frames = request_frames(bytes(core.take_queued()))
        payloads = core.encode_array(np.array(batch, dtype="<i4")) if raw else core.encode_batch(batch)
        _, chunks = core.start_batch(payloads, waiters[-1], raw=raw)
        frames += request_frames(b"".join(bytes(chunk) for chunk in chunks))
        stream = bytearray()
        for index in order:
            frame = frames[index]
            values = [n + 1 for n in frame.requests]
            append_frame(stream, REPLY, len(values), frame.first_id, int32s(values))
        for start, stop in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            core.receive(stream[start:stop])
        return [waiter.outcomes for waiter in waiters], core.in_flight, core.late_replies

    frame_count = len(singles) // 4 + bool(len(singles) % 4) + len(batch) // 4 + bool(len(batch) % 4)
    order = data.draw(st.permutations(range(frame_count)))
    whole = run([])
    size = (HEADER_SIZE * frame_count) + 4 * (len(singles) + len(batch))
    cuts = data.draw(st.lists(st.integers(0, size), max_size=8).map(sorted))
    assert run(cuts) == whole
    outcomes, in_flight, late = whole
    assert in_flight == late == 0
    assert outcomes[: len(singles)] == [[("result", n + 1)] for n in singles]
    replies = [n + 1 for n in batch]
    assert outcomes[-1] == [("result", int32s(replies) if raw else replies)]
