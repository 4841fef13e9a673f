"""What each protocol of ``railcar load`` sends and how its replies are checked, sans I/O.

A session belongs to one connection: ``requests(n)`` encodes ``n`` requests and
remembers what their replies must be; ``feed(data)`` checks the bytes that arrive
and says how many replies they completed (and how many of those were failures,
such as an HTTP 500, counted under the session's ``failure_kind``); bytes that are
not the expected reply raise ProtocolError, so a server that lies is counted, not
believed.
"""

from __future__ import annotations

import random
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from railcar.errors import ProtocolError
from railcar.proto import http1_client as http1
from railcar.proto import kvbin
from railcar.proto import reqrep as wire
from railcar.proto import resp_client as resp

PROTOCOLS: Final = ("echo", "reqrep", "resp", "kvbin", "http", "udp-echo")
#: The protocols with GET/SET workloads over a key space (RESP's only with a ``ratio``).
KEY_SPACE_PROTOCOLS: Final = ("resp", "kvbin")
#: Protocols carried in datagrams (UDP) rather than over a connection.
DATAGRAM_PROTOCOLS: Final = ("udp-echo",)

_COMPACT_AT: Final = 64 * 1024
SEQUENCE: Final = struct.Struct("<Q")
RESP_PING: Final = b"*1\r\n$4\r\nPING\r\n"
RESP_PONG: Final = b"+PONG\r\n"


class Session(Protocol):
    """The protocol state of one load connection."""

    @property
    def closing(self) -> bool:
        """The server said it closes the connection after its current reply."""
        ...

    @property
    def failure_kind(self) -> str:
        """What the failed replies ``feed`` counts are counted as (a kind of FAILURE_KINDS)."""
        ...

    def requests(self, count: int) -> bytes:
        """Encode ``count`` requests and remember the replies they must get."""
        ...

    def feed(self, data: bytes) -> tuple[int, int]:
        """Return (replies completed, of which failed); raises ProtocolError on a wrong reply."""
        ...

    def eof(self) -> tuple[int, int]:
        """Return the replies the close of the connection completes; raises ProtocolError if cut short."""
        ...


@dataclass(frozen=True)
class Workload:
    """A protocol with its settings; makes one Session per connection."""

    protocol: str
    message: bytes | int = 64
    host: str = "127.0.0.1"
    path: str = "/"
    #: GETs to SETs (resp and kvbin; kvbin's default is 1:1, RESP's without it is PING).
    ratio: tuple[int, int] | None = None
    #: Keys each user reads and writes (its own: no other user touches them).
    keys: int = 100
    value_size: int = 16
    #: Names this run in every key, so that no value from an earlier run is read as this one's.
    run: bytes = b"0"

    def __post_init__(self) -> None:
        """Raises ValueError for an unknown protocol or settings it cannot run with."""
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        size = self.message if isinstance(self.message, int) else len(self.message)
        if size < 1:
            raise ValueError("message size must be at least 1 byte")
        if self.ratio is not None:
            if self.protocol not in KEY_SPACE_PROTOCOLS:
                raise ValueError(f"a GET:SET ratio needs --protocol {' or '.join(KEY_SPACE_PROTOCOLS)}")
            if min(self.ratio) < 0 or sum(self.ratio) < 1:
                raise ValueError("a GET:SET ratio needs counts of at least 0, not both 0")
        if self.keys < 1:
            raise ValueError("the key space needs at least 1 key")
        largest = kvbin.MAX_LENGTH if self.protocol == "kvbin" else MAX_RESP_VALUE
        if not 1 <= self.value_size <= largest:
            raise ValueError(f"value size must be 1 to {largest} bytes for {self.protocol}")
        if self.protocol == "udp-echo" and isinstance(self.message, int) and size < SEQUENCE.size:
            raise ValueError(f"udp-echo datagrams carry a sequence number: at least {SEQUENCE.size} bytes")

    @property
    def datagrams(self) -> bool:
        """True when the protocol is carried in datagrams (UDP), not over connections."""
        return self.protocol in DATAGRAM_PROTOCOLS

    def session(self, user: int) -> Session:
        """A fresh session for connection number ``user``."""
        if self.protocol == "echo":
            return EchoSession(self.message, user)
        if self.protocol == "kvbin":
            return KeySpaceSession(KVBIN, self, user)
        if self.protocol == "resp":
            return PingSession() if self.ratio is None else KeySpaceSession(RESP, self, user)
        if self.protocol == "reqrep":
            return Int32Session(user)
        if self.protocol == "udp-echo":
            return DatagramEchoSession(self.message, user)
        return HttpSession(http1.request("GET", self.path, self.host))


class ExpectedBytes:
    """Checks replies known byte for byte in advance, each ``unit`` bytes answering ``per_unit`` requests."""

    __slots__ = ("_expected", "_per_unit", "_pos", "_unit", "closing")
    failure_kind: Final = "status"  # none: every reply is either the expected one or a mismatch

    def __init__(self, unit: int, per_unit: int = 1) -> None:
        self._expected = bytearray()
        self._pos = 0
        self._unit = unit
        self._per_unit = per_unit
        self.closing = False

    def _expect(self, replies: bytes) -> None:
        self._expected += replies

    def feed(self, data: bytes) -> tuple[int, int]:
        """Return (replies completed, 0); raises ProtocolError if ``data`` is not what was expected."""
        expected, pos = self._expected, self._pos
        end = pos + len(data)
        if end > len(expected):
            raise ProtocolError(f"{end - len(expected)} bytes more than the requests sent ask for")
        if expected[pos:end] != data:
            raise ProtocolError(f"reply differs from the expected {bytes(expected[pos:end])[:40]!r}")
        unit = self._unit
        done = (end // unit - pos // unit) * self._per_unit
        if end == len(expected):
            expected.clear()
            end = 0
        elif end > _COMPACT_AT:
            cut = end - end % unit
            del expected[:cut]
            end -= cut
        self._pos = end
        return done, 0

    def eof(self) -> tuple[int, int]:
        """Nothing completes at close: a reply not received by then is lost."""
        return 0, 0


class EchoSession(ExpectedBytes):
    """Messages of a given size (or literal bytes); the echo must match exactly.

    Messages of 8 bytes or more start with a per-connection sequence number, so an
    echo server that replays or mixes up messages is caught.
    """

    __slots__ = ("_numbered", "_seq", "_template")

    def __init__(self, message: bytes | int, user: int) -> None:
        if isinstance(message, bytes):
            template, numbered = message, False
        else:
            pattern = f"railcar load user {user}. ".encode()
            template = (pattern * (message // len(pattern) + 1))[:message]
            numbered = message >= SEQUENCE.size
        super().__init__(len(template))
        self._template = bytearray(template)
        self._numbered = numbered
        self._seq = 0

    def requests(self, count: int) -> bytes:
        """Encode ``count`` messages."""
        if not self._numbered:
            payload = bytes(self._template) * count
        else:
            template, pack, seq = self._template, SEQUENCE.pack_into, self._seq
            pieces = []
            for number in range(seq, seq + count):
                pack(template, 0, number)
                pieces.append(bytes(template))
            self._seq = seq + count
            payload = b"".join(pieces)
        self._expect(payload)
        return payload


class PingSession(ExpectedBytes):
    """Redis RESP ``PING`` as a multi-bulk command (redis-benchmark's ping_mbulk); expects ``+PONG``."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        super().__init__(len(RESP_PONG))
        self._cache: dict[int, tuple[bytes, bytes]] = {}

    def requests(self, count: int) -> bytes:
        """Encode ``count`` PING commands."""
        pair = self._cache.get(count)
        if pair is None:
            pair = self._cache[count] = (RESP_PING * count, RESP_PONG * count)
        self._expect(pair[1])
        return pair[0]


class Int32Session(ExpectedBytes):
    """railcar request–response frames of int32 numbers; the reply must be each number plus one.

    The ``n`` requests of one call travel in one frame, as railcar's clients send
    them, so ``--pipeline`` is the batch size; the server is
    ``railcar serve reqrep --codec int32``.
    """

    __slots__ = ("_count", "_ints", "_seq")

    def __init__(self, user: int) -> None:
        super().__init__(1)
        self._seq = (user * 7919) % (1 << 30)
        self._count = 0
        self._ints = struct.Struct("<0i")

    def requests(self, count: int) -> bytes:
        """Encode one frame of ``count`` numbers."""
        if count != self._count:
            if self._count:
                raise ValueError("every request frame of a session must hold the same number of requests")
            self._count = count
            self._unit = wire.HEADER_SIZE + 4 * count
            self._per_unit = count
            self._ints = struct.Struct(f"<{count}i")
        first = self._seq
        self._seq = (first + count) % (1 << 30)
        values = range(first, first + count)
        body = wire.HEADER_SIZE - 4 + 4 * count
        self._expect(
            wire.HEADER.pack(body, wire.REPLY, count, first)
            + self._ints.pack(*(value + 1 for value in values))
        )
        return wire.HEADER.pack(body, wire.REQUEST, count, first) + self._ints.pack(*values)


class HttpSession:
    """HTTP/1.1 GET on a keep-alive connection; 2xx and 3xx replies succeed, others fail.

    A server answers the same request with the same bytes until its Date header
    ticks, so a read identical to the last fully parsed one has the same result:
    remembering it saves parsing almost every response.
    """

    __slots__ = ("_cache", "_last_read", "_last_result", "_reader", "_request")
    failure_kind: Final = "status"

    def __init__(self, request: bytes) -> None:
        self._request = request
        self._reader = http1.ResponseReader()
        self._cache: dict[int, bytes] = {}
        self._last_read = b""
        self._last_result = (0, 0)

    @property
    def closing(self) -> bool:
        """The server said it closes the connection after its current response."""
        return self._reader.closing

    def requests(self, count: int) -> bytes:
        """Encode ``count`` GET requests."""
        payload = self._cache.get(count)
        if payload is None:
            payload = self._cache[count] = self._request * count
        return payload

    def feed(self, data: bytes) -> tuple[int, int]:
        """Return (responses completed, of which failed); raises ProtocolError on bad framing."""
        reader = self._reader
        if data == self._last_read and reader.idle:
            return self._last_result
        whole = reader.idle
        result = _outcome(reader.feed(data))
        if whole and result[0] and reader.idle and not reader.closing:
            self._last_read, self._last_result = bytes(data), result
        return result

    def eof(self) -> tuple[int, int]:
        """Complete a response whose body ends with the connection; raises ProtocolError if cut short."""
        return _outcome(self._reader.eof())


class DatagramEchoSession:
    """udp-echo: numbered datagrams, each echoed by itself; replies may come in any order, or not at all.

    Every datagram starts with the session's sequence number; a size gives a filler
    after it, literal text is sent after it as it is.  ``requests`` returns the
    datagrams of a batch back to back, each ``size`` bytes; ``check`` says which
    datagram a reply answers and whether it is its exact echo.  Which are still
    owed, and since when, is the I/O side's to track: a datagram may be lost, and
    only a clock tells.
    """

    __slots__ = ("_body", "_seq", "size")

    closing: Final = False  # datagrams have no connection to close
    failure_kind: Final = "mismatch"  # a wrong echo; a missing one is counted lost by the I/O side

    def __init__(self, message: bytes | int, user: int) -> None:
        if isinstance(message, bytes):
            body = message
        else:
            pattern = f"railcar udp user {user}. ".encode()
            body = (pattern * (message // len(pattern) + 1))[: message - SEQUENCE.size]
        self._body = body
        self._seq = 0
        self.size = SEQUENCE.size + len(body)

    def requests(self, count: int) -> bytes:
        """Encode ``count`` datagrams back to back (split them every ``size`` bytes)."""
        pack, body, seq = SEQUENCE.pack, self._body, self._seq
        self._seq = seq + count
        return b"".join(pack(number) + body for number in range(seq, seq + count))

    def check(self, reply: bytes) -> tuple[int, bool]:
        """Return the sequence number ``reply`` carries (-1: none) and whether it echoes that datagram."""
        if len(reply) < SEQUENCE.size:
            return -1, False
        (seq,) = SEQUENCE.unpack_from(reply)
        return int(seq), len(reply) == self.size and reply[SEQUENCE.size :] == self._body

    def feed(self, data: bytes) -> tuple[int, int]:
        """Return (1, 0) for a reply that echoes a datagram sent; raises ProtocolError otherwise."""
        seq, good = self.check(data)
        if not good or seq >= self._seq:
            raise ProtocolError(f"reply {data[:40]!r} is not a datagram this session sent")
        return 1, 0

    def eof(self) -> tuple[int, int]:
        """Nothing completes at the end: a datagram not answered by then is lost."""
        return 0, 0


def _outcome(statuses: list[int]) -> tuple[int, int]:
    """(responses, of which failed): 4xx and 5xx fail."""
    return len(statuses), sum(1 for status in statuses if status >= 400)


#: Largest RESP value a load writes (Redis's own limit, 512 MiB, is no size for a load).
MAX_RESP_VALUE: Final = 1 << 20


@dataclass(frozen=True)
class KeyValueCodec:
    """How one protocol says GET and SET, what it answers, and how its replies are framed."""

    encode_set: Callable[[bytes, bytes], bytes]
    encode_get: Callable[[bytes], bytes]
    stored: bytes  # the reply to a SET
    found: Callable[[bytes | None], bytes]  # the reply to a GET that finds this value (None: nothing)
    # (is the reply a GET's value or its absence, where it ends), or None while incomplete;
    # raises ProtocolError for bytes that are no reply
    frame: Callable[[bytearray, int], tuple[bool, int] | None]


def _kvbin_set(key: bytes, value: bytes) -> bytes:
    return kvbin.REQUEST_HEADER.pack(kvbin.SET, len(key), len(value)) + key + value


def _kvbin_get(key: bytes) -> bytes:
    return kvbin.REQUEST_HEADER.pack(kvbin.GET, len(key), 0) + key


def _kvbin_found(value: bytes | None) -> bytes:
    if value is None:
        return kvbin.NOT_FOUND_REPLY
    return kvbin.REPLY_HEADER.pack(kvbin.OK, len(value)) + value


def _kvbin_frame(data: bytearray, pos: int) -> tuple[bool, int] | None:
    parsed = kvbin.parse_reply(data, pos)
    if parsed is None:
        return None
    reply, end = parsed
    return reply.status in (kvbin.OK, kvbin.NOT_FOUND), end


def _resp_frame(data: bytearray, pos: int) -> tuple[bool, int] | None:
    framed = resp.frame_reply(data, pos)
    if framed is None:
        return None
    kind, end = framed
    return kind == ord("$"), end


KVBIN: Final = KeyValueCodec(_kvbin_set, _kvbin_get, kvbin.OK_REPLY, _kvbin_found, _kvbin_frame)
RESP: Final = KeyValueCodec(resp.encode_set, resp.encode_get, resp.STORED, resp.bulk, _resp_frame)


class KeySpaceSession:
    """GET and SET over this user's own keys; every value read is checked against what it wrote.

    The ops follow the ratio (its SETs, then its GETs, over and over) on keys drawn at
    random from the user's ``keys``.  A GET must return the value this session last
    wrote to that key, or nothing if it wrote none; since a connection's requests are
    answered in order, that holds even for a GET pipelined right behind its SET.  Each
    value carries the number of the write (in its last bytes), so a stale value is
    caught.  A GET answered with another value, or with nothing, is a failed reply of
    kind ``wrong_value``; any other unexpected reply (an error, a SET not stored)
    raises ProtocolError.
    """

    __slots__ = (
        "_codec",
        "_expected",
        "_keys",
        "_ops",
        "_pad",
        "_prefix",
        "_random",
        "_received",
        "_turn",
        "_values",
        "_writes",
    )
    failure_kind: Final = "wrong_value"
    closing: Final = False

    def __init__(self, codec: KeyValueCodec, workload: Workload, user: int) -> None:
        gets, sets = workload.ratio or (1, 1)
        self._codec = codec
        self._ops = [True] * sets + [False] * gets  # True: SET
        self._turn = 0
        self._keys = workload.keys
        self._prefix = b"railcar:%b:%d:" % (workload.run, user)
        self._pad = b"v" * workload.value_size
        self._random = random.Random(user).random
        self._values: dict[int, bytes] = {}
        self._writes = 0
        # the reply each request in flight must get, and whether it is a GET's
        self._expected: deque[tuple[bytes, bool]] = deque()
        self._received = bytearray()

    def _value(self) -> bytes:
        self._writes += 1
        number = b".%x" % self._writes
        pad = self._pad
        return pad[: max(0, len(pad) - len(number))] + number[-len(pad) :]

    def requests(self, count: int) -> bytes:
        """Encode ``count`` GETs and SETs and remember what each must be answered."""
        codec, ops, values, expect = self._codec, self._ops, self._values, self._expected.append
        keys, draw, prefix = self._keys, self._random, self._prefix
        pieces = []
        for _ in range(count):
            is_set = ops[self._turn % len(ops)]
            self._turn += 1
            index = int(draw() * keys)
            key = b"%b%d" % (prefix, index)
            if is_set:
                value = values[index] = self._value()
                pieces.append(codec.encode_set(key, value))
                expect((codec.stored, False))
            else:
                pieces.append(codec.encode_get(key))
                expect((codec.found(values.get(index)), True))
        return b"".join(pieces)

    def feed(self, data: bytes) -> tuple[int, int]:
        """Return (replies completed, of which wrong values); raises ProtocolError on any other surprise."""
        received, expected = self._received, self._expected
        received += data
        size = len(received)
        pos = done = wrong = 0
        while expected:
            want, is_get = expected[0]
            if received.startswith(want, pos):
                pos += len(want)
            else:
                if size - pos < len(want) and want.startswith(received[pos:]):
                    break  # the expected reply, not all here yet
                framed = self._codec.frame(received, pos)
                if framed is None:
                    break
                is_value, end = framed
                if not (is_get and is_value):
                    got = bytes(received[pos:end])[:60]
                    raise ProtocolError(f"expected {want[:60]!r}, got {got!r}")
                wrong += 1
                pos = end
            expected.popleft()
            done += 1
        if pos:
            del received[:pos]
        if received and not expected:
            raise ProtocolError(f"{len(received)} bytes more than the requests sent ask for")
        return done, wrong

    def eof(self) -> tuple[int, int]:
        """Nothing completes at close: a reply not received by then is lost."""
        return 0, 0
