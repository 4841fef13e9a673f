"""The NATS client protocol, sans I/O: server bytes in, events out; client operations encoded.

The server sends INFO, MSG, HMSG, PING, PONG, +OK and -ERR; the client sends CONNECT, PUB,
HPUB, SUB, UNSUB, PING and PONG.  Every operation is a control line ending in CRLF; MSG and
HMSG are followed by a payload of the size their line states and a CRLF.  An HMSG payload
starts with a header block: ``NATS/1.0[ status[ description]]`` CRLF, ``Key: Value`` lines,
an empty line.

``Parser`` is two explicit states over the bytes it is fed: reading a control line (the
unparsed tail is kept, at most ``max_control_line`` bytes), or collecting a payload whose
size is known (chunks are kept in a list and joined once, so a large payload arriving in
many reads costs one copy).  Any split of the stream into chunks gives the same events.
Nothing is buffered without a bound: a control line over its limit, or a payload over
``max_payload``, is a ProtocolError that says which.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any, Final

from railcar.errors import ProtocolError, RailcarError

#: The longest control line accepted from a server (INFO carries a cluster's connect_urls).
MAX_CONTROL_LINE: Final = 64 * 1024
#: The largest MSG/HMSG payload accepted (nats-server's own ceiling for max_payload).
MAX_PAYLOAD: Final = 64 * 1024 * 1024

HEADER_LINE: Final = b"NATS/1.0"
CRLF: Final = b"\r\n"
PING_OP: Final = b"PING\r\n"
PONG_OP: Final = b"PONG\r\n"

#: Status codes the server puts in a header block's first line.
NO_RESPONDERS: Final = 503


class InvalidSubject(RailcarError, ValueError):
    """A subject or queue group that the protocol cannot carry (empty, whitespace, empty token)."""


class InvalidHeader(RailcarError, ValueError):
    """A header name or value that a NATS/1.0 header block cannot carry."""


# -- events ------------------------------------------------------------------------------


class Info:
    """The server's INFO: its settings as a dict (``server_id``, ``max_payload``, ``connect_urls``…)."""

    __slots__ = ("options",)

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    def __repr__(self) -> str:
        return f"Info({self.options!r})"


class Headers:
    """A header block: ordered name/value pairs (a name may repeat) and the status line.

    ``status`` is the code of the first line (503 for no responders), None when there is
    none; ``description`` is the rest of that line.
    """

    __slots__ = ("description", "pairs", "status")

    def __init__(
        self,
        pairs: Iterable[tuple[str, str]] = (),
        status: int | None = None,
        description: str = "",
    ) -> None:
        self.pairs = list(pairs)
        self.status = status
        self.description = description

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        for key, value in self.pairs:
            if key == name:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, in order (empty when absent)."""
        return [value for key, value in self.pairs if key == name]

    def __getitem__(self, name: str) -> str:
        """The first value of ``name``; raises KeyError when absent."""
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return any(key == name for key, _ in self.pairs)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(key for key, _ in self.pairs))

    def __len__(self) -> int:
        return len(self.pairs)

    def items(self) -> list[tuple[str, str]]:
        """Every (name, value) pair, repeated names included."""
        return list(self.pairs)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return (self.pairs, self.status, self.description) == (other.pairs, other.status, other.description)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({self.pairs!r}, status={self.status!r}, description={self.description!r})"


class Msg(tuple[bytes, int, bytes, bytes, "Headers | None"]):
    """A MSG or HMSG: an immutable tuple ``(subject, sid, reply, data, headers)``.

    ``subject`` and ``reply`` decode the raw bytes when read (``raw_subject``/``raw_reply``
    do not), so a callback that never reads them pays nothing; ``reply`` is "" when the
    publisher gave none; ``headers`` is None for a MSG.  A tuple because making one costs
    half what a class with ``__init__`` does, and a subscriber makes one per message.
    """

    __slots__ = ()

    def __new__(
        cls, subject: bytes, sid: int, reply: bytes, data: bytes, headers: Headers | None = None
    ) -> Msg:
        """Make a message (the parser's hot path calls ``tuple.__new__`` itself)."""
        return tuple.__new__(cls, (subject, sid, reply, data, headers))

    raw_subject = property(itemgetter(0), doc="The subject as the server sent it.")
    sid = property(itemgetter(1), doc="The subscription id the server delivered it for.")
    raw_reply = property(itemgetter(2), doc="The reply subject as the server sent it (b'' when none).")
    data = property(itemgetter(3), doc="The payload.")
    headers = property(itemgetter(4), doc="The header block of an HMSG, None for a MSG.")

    @property
    def subject(self) -> str:
        """The subject the message was published to."""
        return self[0].decode()

    @property
    def reply(self) -> str:
        """The reply subject, or "" when the publisher gave none."""
        return self[2].decode()

    def __repr__(self) -> str:
        data = self[3]
        return (
            f"Msg(subject={self[0]!r}, sid={self[1]}, reply={self[2]!r}, "
            f"data={data[:32]!r}{'…' if len(data) > 32 else ''}, headers={self[4]!r})"
        )


class Ping:
    """The server's PING: answer with PONG."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "PING"


class Pong:
    """The server's PONG: the oldest outstanding PING is answered."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "PONG"


class Ok:
    """+OK (sent only to verbose clients)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "+OK"


class Err:
    """-ERR: the server's error message (quotes removed); most close the connection."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Err) and other.message == self.message

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Err({self.message!r})"


class BadMessage:
    """An HMSG whose header block is malformed: its framing held, so only it is lost, not the stream.

    The server forwards header blocks unchecked, so any publisher can send one; a
    connection-level error would let it disconnect every subscriber.
    """

    __slots__ = ("reason", "sid", "subject")

    def __init__(self, subject: bytes, sid: int, reason: str) -> None:
        self.subject = subject
        self.sid = sid
        self.reason = reason

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BadMessage) and (other.subject, other.sid, other.reason) == (
            self.subject,
            self.sid,
            self.reason,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"BadMessage({self.subject!r}, {self.sid}, {self.reason!r})"


PING: Final = Ping()
PONG: Final = Pong()
OK: Final = Ok()

Event = Info | Msg | Ping | Pong | Ok | Err | BadMessage


# -- parsing -----------------------------------------------------------------------------

_CONTROL: Final = 0  # reading a control line
_PAYLOAD: Final = 1  # collecting the payload (and its CRLF) of a MSG/HMSG whose line was read


class Parser:
    """Turns the server's byte stream into events; raises ProtocolError for a broken stream.

    After a ProtocolError the parser is unusable: the connection must be dropped.
    """

    __slots__ = (
        "_have",
        "_hsize",
        "_ints",
        "_need",
        "_parts",
        "_reply",
        "_sid",
        "_state",
        "_subject",
        "_tail",
        "max_control_line",
        "max_payload",
    )

    def __init__(self, max_control_line: int = MAX_CONTROL_LINE, max_payload: int = MAX_PAYLOAD) -> None:
        if max_control_line < 16 or max_payload < 0:
            raise ValueError(
                f"need max_control_line >= 16 and max_payload >= 0 (got {max_control_line}, {max_payload})"
            )
        self.max_control_line = max_control_line
        self.max_payload = max_payload
        self._state = _CONTROL
        self._tail = b""  # _CONTROL: the start of a control line not yet complete
        self._parts: list[bytes] = []  # _PAYLOAD: the payload's chunks so far
        self._have = 0  # _PAYLOAD: bytes in _parts
        self._need = 0  # _PAYLOAD: payload size + 2 (its CRLF)
        self._subject = b""  # _PAYLOAD: the pending message's line
        self._sid = 0
        self._reply = b""
        self._hsize = -1  # _PAYLOAD: header block size of an HMSG, -1 for a MSG
        # Sizes and sids already seen, as their digits: a dict hit is about half an int() call.
        self._ints: dict[bytes, int] = {}

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete operation."""
        return len(self._tail) + self._have

    def feed(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Parse one chunk and return the events it completed; raises ProtocolError."""
        events: list[Event] = []
        if self._state == _PAYLOAD:
            self._parts.append(bytes(data))
            self._have += len(data)
            if self._have < self._need:
                return events
            buf = b"".join(self._parts)
            self._parts = []
            self._have = 0
            self._state = _CONTROL
            need = self._need
            events.append(self._message(buf[: need - 2], buf[need - 2 : need]))
            buf = buf[need:]
        else:
            buf = self._tail + data if self._tail else bytes(data)
            self._tail = b""
        if buf:
            self._parse(buf, events)
        return events

    def _parse(self, buf: bytes, events: list[Event]) -> None:
        """The control-line state over ``buf``.

        One C-level split at every CRLF, then a walk over the pieces: a MSG whose payload
        holds no CRLF is a line and the piece after it, so it costs one split of its line,
        two ints and the Msg.  Payloads holding CRLF are joined back from their pieces.
        """
        parts = buf.split(b"\r\n")
        tail = parts.pop()  # after the last CRLF: an incomplete line, or b""
        limit = self.max_control_line
        max_payload = self.max_payload
        append = events.append
        pieces = iter(parts)
        ints = self._ints.get
        number = self._number
        make = tuple.__new__
        for line in pieces:
            args = line.split()
            nargs = len(args)
            if (nargs == 4 or nargs == 5) and args[0] == b"MSG":  # noqa: PLR1714 - the fast path
                size = ints(args[-1]) or number(args[-1], line)
                sid = ints(args[2]) or number(args[2], line)
                if len(line) > limit:
                    raise ProtocolError(f"control line of over {limit} bytes (starts {line[:32]!r})")
                if size > max_payload:
                    raise ProtocolError(f"MSG payload of {size} bytes is over the limit of {max_payload}")
                reply = args[3] if nargs == 5 else b""
                data = next(pieces, None)
                if data is not None and len(data) == size:
                    append(make(Msg, (args[1], sid, reply, data, None)))
                    continue
                self._subject, self._sid, self._reply, self._hsize = args[1], sid, reply, -1
            else:
                if len(line) > limit:
                    raise ProtocolError(f"control line of over {limit} bytes (starts {line[:32]!r})")
                size = self._control(line, events)
                if size < 0:
                    continue
                data = next(pieces, None)
            # A payload of ``size`` bytes follows: its pieces are joined back at the CRLFs.
            if data is None:
                self._wait_payload(tail, size)
                return
            collected = [data]
            length = len(data)
            while length < size:
                piece = next(pieces, None)
                if piece is None:
                    self._wait_payload(b"\r\n".join(collected) + b"\r\n" + tail, size)
                    return
                collected.append(piece)
                length += 2 + len(piece)
            if length > size:
                raise ProtocolError(f"{self._kind()} payload of {size} bytes not followed by CRLF")
            append(self._message(b"\r\n".join(collected), b"\r\n"))
        if len(tail) > limit:
            raise ProtocolError(f"control line of over {limit} bytes (starts {tail[:32]!r})")
        self._tail = tail

    def _number(self, digits: bytes, line: bytes) -> int:
        """A size or sid of a MSG line (remembered for next time); raises ProtocolError."""
        if not digits.isdigit():
            raise ProtocolError(f"malformed MSG line {line[:64]!r}")
        value = int(digits)
        if len(self._ints) < 4096:  # bounded: past that, numbers are parsed every time
            self._ints[digits] = value
        return value

    def _control(self, line: bytes, events: list[Event]) -> int:
        """Parse a line other than a fast-path MSG: append its event, or return its payload size (else -1).

        For MSG and HMSG the line's fields are kept for the payload that follows.
        """
        op, _, rest = line.partition(b" ")
        if b"\t" in op:  # the server accepts a tab after the op, so do we
            op, _, rest = line.partition(b"\t")
        op = op.upper()
        if op in {b"MSG", b"HMSG"}:
            return self._payload_line(op.decode(), line, rest)
        if op == b"PING":
            events.append(PING)
        elif op == b"PONG":
            events.append(PONG)
        elif op == b"+OK":
            events.append(OK)
        elif op == b"-ERR":
            events.append(Err(rest.strip().strip(b"'").decode(errors="replace")))
        elif op == b"INFO":
            try:
                options = json.loads(rest)
            except ValueError as exc:
                raise ProtocolError(f"INFO is not JSON: {exc}") from None
            if not isinstance(options, dict):
                raise ProtocolError(f"INFO is not a JSON object: {rest[:64]!r}")
            events.append(Info(options))
        else:
            raise ProtocolError(f"unknown operation {line[:32]!r}")
        return -1

    def _payload_line(self, kind: str, line: bytes, rest: bytes) -> int:
        """Keep a MSG/HMSG line's fields and return its payload size; raises ProtocolError."""
        args = rest.split()
        hmsg = kind == "HMSG"
        counts = (4, 5) if hmsg else (3, 4)
        try:
            size = int(args[-1])
            hsize = int(args[-2]) if hmsg else -1
            sid = int(args[1])
        except (ValueError, IndexError):
            raise ProtocolError(f"malformed {kind} line {line[:64]!r}") from None
        if len(args) not in counts or size < 0 or (hmsg and not 0 <= hsize <= size):
            raise ProtocolError(f"malformed {kind} line {line[:64]!r}")
        if size > self.max_payload:
            raise ProtocolError(f"{kind} payload of {size} bytes is over the limit of {self.max_payload}")
        self._subject, self._sid, self._hsize = args[0], sid, hsize
        self._reply = args[2] if len(args) == counts[1] else b""
        return size

    def _wait_payload(self, part: bytes, size: int) -> None:
        """Enter the payload state holding ``part``, the start of a payload of ``size`` bytes."""
        self._state = _PAYLOAD
        self._need = size + 2
        self._parts = [part] if part else []
        self._have = len(part)
        if self._have >= self._need:  # cannot be valid: the CRLF after the payload would have split it
            raise ProtocolError(f"{self._kind()} payload of {size} bytes not followed by CRLF")

    def _kind(self) -> str:
        return "MSG" if self._hsize < 0 else "HMSG"

    def _message(self, payload: bytes, end: bytes) -> Msg | BadMessage:
        """The pending message with its ``payload``; ``end`` must be the CRLF that followed it."""
        if end != b"\r\n":
            raise ProtocolError(f"{self._kind()} payload of {len(payload)} bytes not followed by CRLF")
        hsize = self._hsize
        if hsize < 0:
            return Msg(self._subject, self._sid, self._reply, payload)
        try:
            headers = parse_headers(payload[:hsize])
        except ProtocolError as exc:
            return BadMessage(self._subject, self._sid, str(exc))
        return Msg(self._subject, self._sid, self._reply, payload[hsize:], headers)


def parse_headers(block: bytes) -> Headers:
    """Parse a NATS/1.0 header block (status line, ``Key: Value`` lines); raises ProtocolError."""
    text = block.decode(errors="replace")
    lines = text.split("\r\n")
    first = lines[0]
    if not first.startswith("NATS/1.0"):
        raise ProtocolError(f"header block does not start with NATS/1.0: {first[:32]!r}")
    status: int | None = None
    description = ""
    rest = first[8:].strip()
    if rest:
        code, _, description = rest.partition(" ")
        if not (len(code) == 3 and code.isdigit()):
            raise ProtocolError(f"bad status in header line {first!r}")
        status = int(code)
        description = description.strip()
    pairs: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise ProtocolError(f"bad header line {line[:64]!r}")
        pairs.append((name.strip(), value.strip()))
    return Headers(pairs, status, description)


# -- encoding ----------------------------------------------------------------------------

_BAD_SUBJECT: Final = re.compile(r"\s|^\.|\.\.|\.$")
_BAD_HEADER_NAME: Final = re.compile(r"[\s:]|[^\x21-\x7e]")
_BAD_HEADER_VALUE: Final = re.compile(r"[\r\n]")


def subject_bytes(subject: str | bytes, what: str = "subject") -> bytes:
    """Validate a subject and return it encoded; raises InvalidSubject (empty, whitespace, empty token)."""
    text = subject.decode(errors="replace") if isinstance(subject, bytes) else subject
    if not text:
        raise InvalidSubject(f"empty {what}")
    if _BAD_SUBJECT.search(text):
        raise InvalidSubject(f"invalid {what} {text!r}: it holds whitespace or an empty token")
    return subject if isinstance(subject, bytes) else subject.encode()


def queue_bytes(queue: str | bytes) -> bytes:
    """Validate a queue group name and return it encoded; raises InvalidSubject."""
    text = queue.decode(errors="replace") if isinstance(queue, bytes) else queue
    if not text or any(c.isspace() for c in text):
        raise InvalidSubject(f"invalid queue group {text!r}: empty or holds whitespace")
    return queue if isinstance(queue, bytes) else queue.encode()


def connect_op(options: Mapping[str, Any]) -> bytes:
    """CONNECT with ``options`` as JSON (verbose, pedantic, headers, no_responders, auth…)."""
    return b"CONNECT " + json.dumps(dict(options), separators=(",", ":")).encode() + CRLF


def pub_op(subject: bytes, payload: bytes, reply: bytes = b"") -> bytes:
    """PUB for an already validated subject and reply (see ``subject_bytes``)."""
    if reply:
        return b"PUB %b %b %d\r\n%b\r\n" % (subject, reply, len(payload), payload)
    return b"PUB %b %d\r\n%b\r\n" % (subject, len(payload), payload)


def header_block(headers: Headers | Mapping[str, str | Sequence[str]]) -> bytes:
    """Encode headers as a NATS/1.0 block (a status line when a Headers has one); raises InvalidHeader."""
    if isinstance(headers, Headers):
        pairs: Iterable[tuple[str, str]] = headers.pairs
        first = "NATS/1.0"
        if headers.status is not None:
            first = f"NATS/1.0 {headers.status} {headers.description}".rstrip()
    else:
        pairs = _pairs(headers)
        first = "NATS/1.0"
    lines = [first]
    for name, value in pairs:
        if not name or _BAD_HEADER_NAME.search(name):
            raise InvalidHeader(f"invalid header name {name!r}")
        if _BAD_HEADER_VALUE.search(value):
            raise InvalidHeader(f"invalid value for header {name!r}: it holds CR or LF")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _pairs(headers: Mapping[str, str | Sequence[str]]) -> Iterator[tuple[str, str]]:
    for name, value in headers.items():
        if isinstance(value, str):
            yield name, value
        else:
            for one in value:
                yield name, one


def hpub_op(subject: bytes, block: bytes, payload: bytes, reply: bytes = b"") -> bytes:
    """HPUB for a validated subject and reply, with ``block`` from ``header_block``."""
    total = len(block) + len(payload)
    if reply:
        return b"HPUB %b %b %d %d\r\n%b%b\r\n" % (subject, reply, len(block), total, block, payload)
    return b"HPUB %b %d %d\r\n%b%b\r\n" % (subject, len(block), total, block, payload)


def sub_op(subject: bytes, sid: int, queue: bytes = b"") -> bytes:
    """SUB for a validated subject (and queue group)."""
    if queue:
        return b"SUB %b %b %d\r\n" % (subject, queue, sid)
    return b"SUB %b %d\r\n" % (subject, sid)


def unsub_op(sid: int, max_msgs: int = 0) -> bytes:
    """UNSUB now, or after ``max_msgs`` messages in all when it is positive."""
    if max_msgs > 0:
        return b"UNSUB %d %d\r\n" % (sid, max_msgs)
    return b"UNSUB %d\r\n" % sid
