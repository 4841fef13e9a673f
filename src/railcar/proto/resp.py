r"""Redis's RESP wire protocol, sans I/O: requests in (RESP arrays and inline commands), replies out.

Requests are parsed the way Redis 7.0 parses them (``processMultibulkBuffer`` and
``processInlineBuffer``), with the same limits and the same error texts, so a client
sees the same reply and the same close: every ``RespProtocolError`` ends the
connection after its reply, as ``CLIENT_CLOSE_AFTER_REPLY`` does in Redis.  What Redis
accepts loosely is accepted here too: the two bytes after a bulk string and after a
length line's ``\\r`` are skipped, not checked.

Replies are Python values encoded by ``encode_reply`` for RESP2 or RESP3.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from railcar.choices import choose
from railcar.errors import ProtocolError

if TYPE_CHECKING:
    from railcar.proto._resp import CRequestParser

_hiredis: Any
try:  # the C parser redis-py uses; the pure-Python parser is the fallback
    import hiredis as _hiredis
except ImportError:  # pragma: no cover - hiredis is a dependency; this keeps the fallback importable
    _hiredis = None

Buffer = bytes | bytearray | memoryview
Command = list[bytes]

#: Redis's PROTO_INLINE_MAX_SIZE: longest inline request, and longest unterminated length line.
INLINE_MAX: Final = 64 * 1024
#: Redis's proto-max-bulk-len default: the largest bulk string of a request.
MAX_BULK: Final = 512 * 1024 * 1024
_INT_MAX: Final = 2**31 - 1
#: Before AUTH (with a password set) Redis refuses longer arrays and bulks than these.
UNAUTH_MAX_ARGS: Final = 10
UNAUTH_MAX_BULK: Final = 16384

_DIGITS: Final = frozenset(b"0123456789")
_SPACES: Final = b" \t\n\v\f\r"
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")
_ESCAPES: Final = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}


class RespProtocolError(ProtocolError):
    """A request that breaks RESP; its text is Redis's error reply, and the connection closes after it."""


class QueryBufferOverflow(RespProtocolError):
    """More unparsed request bytes than the parser's limit: Redis closes such a client without a reply."""


def string_to_int(text: Buffer) -> int | None:
    """Redis's ``string2ll``: a strict base-10 64-bit integer (no sign '+', no leading zeros), else None."""
    size = len(text)
    if size == 0 or size > 20:
        return None
    raw = bytes(text)
    if raw == b"0":
        return 0
    digits = raw[1:] if raw[0] == 0x2D else raw  # '-'
    if not digits or digits[0] == 0x30 or not _DIGITS.issuperset(digits):
        return None
    value = int(raw)
    if not -(2**63) <= value < 2**63:
        return None
    return value


def _length(text: bytearray) -> int | None:
    """``string_to_int`` with a fast path for the usual short unsigned length."""
    if text.isdigit() and len(text) < 19 and (text[0] != 0x30 or len(text) == 1):
        return int(text)
    return string_to_int(text)


def split_inline(line: bytes) -> list[bytes] | None:
    """Redis's ``sdssplitargs``: split an inline request into arguments; None for unbalanced quotes."""
    line = line.split(b"\0", 1)[0]  # Redis reads the line as a C string
    args: list[bytes] = []
    pos, end = 0, len(line)
    while True:
        while pos < end and line[pos] in _SPACES:
            pos += 1
        if pos >= end:
            return args
        current = bytearray()
        in_double = in_single = False
        while True:
            char = line[pos] if pos < end else 0
            if in_double:
                if (
                    char == 0x5C  # backslash
                    and pos + 3 < end
                    and line[pos + 1] == 0x78  # 'x'
                    and line[pos + 2] in _HEX
                    and line[pos + 3] in _HEX
                ):
                    current.append(int(line[pos + 2 : pos + 4], 16))
                    pos += 3
                elif char == 0x5C and pos + 1 < end:
                    pos += 1
                    current.append(_ESCAPES.get(line[pos], line[pos]))
                elif char == 0x22:  # closing '"' must be followed by a space or the end
                    if pos + 1 < end and line[pos + 1] not in _SPACES:
                        return None
                    pos += 1
                    break
                elif pos >= end:
                    return None
                else:
                    current.append(char)
            elif in_single:
                if char == 0x5C and pos + 1 < end and line[pos + 1] == 0x27:
                    pos += 1
                    current.append(0x27)
                elif char == 0x27:
                    if pos + 1 < end and line[pos + 1] not in _SPACES:
                        return None
                    pos += 1
                    break
                elif pos >= end:
                    return None
                else:
                    current.append(char)
            elif pos >= end or char in b" \n\r\t":
                break
            elif char == 0x22:
                in_double = True
            elif char == 0x27:
                in_single = True
            else:
                current.append(char)
            pos += 1
        args.append(bytes(current))


def _line_end(buf: bytearray, char: bytes, pos: int) -> int:
    """Where ``char`` is after ``pos``, as C's strchr finds it: -1 if a NUL byte comes first.

    Redis looks for line ends with strchr, which stops at a NUL byte, so a line holding
    one is unterminated for Redis until the 64 KiB limit; so it is here.
    """
    end = buf.find(char, pos)
    if end < 0 or buf.find(b"\0", pos, end) >= 0:
        return -1
    return end


def _error_text(template: str, char: int) -> str:
    """An error text holding one request byte, sanitized like Redis's addReplyErrorFormat."""
    shown = " " if char in (10, 13) else bytes([char]).decode("utf-8", "surrogateescape")
    return template % shown


class RequestParser:
    """Pure-Python RESP request parser: ``feed`` bytes, then ``next_command`` until it returns None.

    It keeps the incomplete tail (bounded: ``max_buffer`` bytes, default 1 GiB like Redis's
    client-query-buffer-limit, past which ``feed`` raises RespProtocolError) and the progress
    made on a long array, so a request arriving in many reads is parsed once.
    Set ``authenticated`` False while a password is required and not given: Redis then
    refuses arrays of more than 10 elements and bulks over 16 KiB.
    """

    __slots__ = ("_args", "_buf", "_left", "_pos", "authenticated", "max_buffer")

    def __init__(self, max_buffer: int = 1 << 30) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._args: list[bytes] = []
        self._left = 0  # elements still to read of the array in progress; 0: between requests
        self.authenticated = True
        self.max_buffer = max_buffer

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as part of a command."""
        return len(self._buf) - self._pos

    @property
    def at_boundary(self) -> bool:
        """True between requests: no array is partly read."""
        return self._left == 0

    def feed(self, data: Buffer) -> None:
        """Add received bytes; raises QueryBufferOverflow when the unparsed bytes pass ``max_buffer``."""
        buf = self._buf
        if self._pos > 65536 and self._pos * 2 > len(buf):
            del buf[: self._pos]  # compact only when the consumed head is large: amortized O(1)
            self._pos = 0
        buf += data
        if len(buf) - self._pos > self.max_buffer:
            raise QueryBufferOverflow(f"query buffer over {self.max_buffer} bytes")

    @property
    def array_next(self) -> bool:
        """True if the unparsed bytes begin with an array (``*``): the only requests hiredis is given."""
        return self._pos < len(self._buf) and self._buf[self._pos] == 0x2A

    def take(self) -> bytes:
        """Remove and return every unparsed byte (for a faster parser to continue from a request boundary)."""
        rest = bytes(self._buf[self._pos :])
        self._buf.clear()
        self._pos = 0
        return rest

    def next_command(self) -> Command | None:  # noqa: PLR0911 - one return per way a read can end
        """The next complete request (possibly empty: skip it), or None; raises RespProtocolError."""
        buf = self._buf
        pos = self._pos
        if self._left == 0:
            if pos >= len(buf):
                if pos:
                    buf.clear()
                    self._pos = 0
                return None
            if buf[pos] != 0x2A:  # '*'
                return self._inline()
            newline = _line_end(buf, b"\r", pos)
            if newline < 0:
                if len(buf) - pos > INLINE_MAX:
                    raise RespProtocolError("Protocol error: too big mbulk count string")
                return None
            if newline + 2 > len(buf):
                return None
            count = _length(buf[pos + 1 : newline])
            if count is None or count > _INT_MAX:
                raise RespProtocolError("Protocol error: invalid multibulk length")
            if count > UNAUTH_MAX_ARGS and not self.authenticated:
                raise RespProtocolError("Protocol error: unauthenticated multibulk length")
            self._pos = pos = newline + 2
            if count <= 0:
                return []
            self._left = count
            self._args = []
        args = self._args
        end = len(buf)
        left = self._left
        while left:
            newline = _line_end(buf, b"\r", pos)
            if newline < 0:
                if end - pos > INLINE_MAX:
                    raise RespProtocolError("Protocol error: too big bulk count string")
                break
            if newline + 2 > end:
                break
            if buf[pos] != 0x24:  # '$'
                raise RespProtocolError(_error_text("Protocol error: expected '$', got '%s'", buf[pos]))
            head = buf[pos + 1 : newline]
            if head.isdigit() and len(head) < 10 and (head[0] != 0x30 or len(head) == 1):
                size: int | None = int(head)
            else:
                size = string_to_int(head)
            if size is None or size < 0 or size > MAX_BULK:
                raise RespProtocolError("Protocol error: invalid bulk length")
            if size > UNAUTH_MAX_BULK and not self.authenticated:
                raise RespProtocolError("Protocol error: unauthenticated bulk length")
            start = newline + 2
            if start + size + 2 > end:
                break
            pos = start + size + 2
            args.append(bytes(buf[start : pos - 2]))
            left -= 1
        self._pos = pos
        self._left = left
        if left:
            return None
        self._args = []
        return args

    def _inline(self) -> Command | None:
        buf = self._buf
        pos = self._pos
        newline = _line_end(buf, b"\n", pos)
        if newline < 0:
            if len(buf) - pos > INLINE_MAX:
                raise RespProtocolError("Protocol error: too big inline request")
            return None
        end = newline - 1 if newline > pos and buf[newline - 1] == 0x0D else newline
        args = split_inline(bytes(buf[pos:end]))
        if args is None:
            raise RespProtocolError("Protocol error: unbalanced quotes in request")
        self._pos = newline + 1
        return args


_DIGITS_LEN: Final = [len(str(n)) for n in range(10000)]


class HiredisRequestParser:
    """``RequestParser``'s behaviour with the C parser of hiredis doing the common case.

    Each read that starts at a request boundary goes to ``hiredis.Reader``.  hiredis also
    accepts what Redis refuses in a request (nested arrays, integers, simple strings, ...),
    so its output is taken only when every request is a list of bytes and the read holds no
    type byte after which hiredis returns bytes or lists for something else (``+ = ( ~ > |``);
    otherwise, or when the read ends inside a request, each array and element is checked at
    its canonical place, which also finds where the partial request starts.  Anything that
    fails — inline commands, odd elements, a hiredis error, a password not yet given — is parsed
    again by the pure-Python parser from the same boundary; it also takes any incomplete tail,
    so hiredis never holds a request across reads.
    """

    __slots__ = ("_next", "_py", "_reader", "_ready")

    def __init__(self, max_buffer: int = 1 << 30) -> None:
        if _hiredis is None:  # pragma: no cover
            raise RuntimeError("hiredis is not installed")
        self._py = RequestParser(max_buffer)
        self._ready: list[Command] = []
        self._next = 0  # index of the next request of _ready to return
        self._reader = _hiredis.Reader()

    @property
    def authenticated(self) -> bool:
        """False while a password is required and not given (the stricter limits apply)."""
        return self._py.authenticated

    @authenticated.setter
    def authenticated(self, value: bool) -> None:
        self._py.authenticated = value

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as part of a command (hiredis holds none)."""
        return self._py.buffered

    def feed(self, data: Buffer) -> None:
        """Add received bytes; raises QueryBufferOverflow when the unparsed bytes pass the buffer limit."""
        py = self._py
        if py.buffered or self._next < len(self._ready) or not py.authenticated:
            py.feed(data)
            return
        self._fast(bytes(data))

    def _fast(self, chunk: bytes) -> None:
        reader = self._reader
        reader.feed(chunk)
        ready: list[Command] = []
        try:
            while (command := reader.gets()) is not False:
                ready.append(command)
        except Exception:  # noqa: BLE001 - ProtocolError, or TypeError for a list as a map key: Python decides
            self._fall_back(chunk)
            return
        # hiredis says neither how far it read nor whether it holds part of a request (it may
        # have taken a type byte, an array header, some elements): an empty array fed after the
        # read comes back alone only if it holds nothing.
        reader.feed(_SENTINEL)
        try:
            whole = reader.gets() == []
        except Exception:  # noqa: BLE001 - whatever hiredis makes of it, it held something
            whole = False
        if not whole:
            self._reader = _hiredis.Reader()
        if not whole or any(mark in chunk for mark in _RISKY) or not _bulk_arrays(ready):
            end = _canonical_end(chunk, ready)  # check the requests and find where they end
            if end < 0:
                self._fall_back(chunk)
                return
            if end < len(chunk):
                self._py.feed(chunk[end:])  # the partial request goes to the Python parser
        if self._next:
            del self._ready[: self._next]
            self._next = 0
        self._ready += ready

    def take_ready(self) -> list[Command]:
        """Every request hiredis has parsed and not yet returned, at once (the caller runs them in order).

        Requests the caller does not run must be handed back with ``put_back``.
        """
        ready = self._ready
        if self._next:
            del ready[: self._next]
            self._next = 0
        self._ready = []
        return ready

    def put_back(self, commands: list[Command]) -> None:
        """Return requests taken with ``take_ready`` and not run, to be returned first."""
        if commands:
            self._ready[: self._next] = []
            self._next = 0
            self._ready[:0] = commands

    def _fall_back(self, chunk: bytes) -> None:
        """Not plain arrays of bulk strings: the Python parser decides, from the same boundary."""
        self._reader = _hiredis.Reader()
        self._py.feed(chunk)

    def next_command(self) -> Command | None:
        """The next complete request (possibly empty: skip it), or None; raises RespProtocolError."""
        ready = self._ready
        if self._next < len(ready):
            command = ready[self._next]
            self._next += 1
            return command
        if ready:
            ready.clear()
            self._next = 0
        py = self._py
        parsed = py.next_command()
        if parsed is not None and py.at_boundary and py.array_next and py.authenticated:
            # The long request is done: hand the rest back to hiredis.  Not an inline line: it
            # may be one Redis (and so the Python parser) holds as unterminated, which hiredis
            # would read as something else.
            self._fast(py.take())
        return parsed


_SENTINEL: Final = b"*0\r\n"
#: Type bytes after which hiredis returns bytes or a list that Redis would refuse in a request:
#: simple strings, verbatim strings, big numbers, sets, pushes and attributes.
_RISKY: Final = (b"+", b"=", b"(", b"~", b">", b"|")


def _bulk_arrays(commands: list[Command]) -> bool:
    """True if every command is a list of bytes (what hiredis returns for arrays of bulk strings)."""
    for command in commands:
        if type(command) is not list:
            return False
        for arg in command:
            if type(arg) is not bytes:
                return False
    return True


def _canonical_end(chunk: bytes, commands: list[Command]) -> int:
    """Where ``commands`` end in ``chunk`` if each was an array of bulk strings there, else -1.

    The lengths are canonical (hiredis, like Redis, refuses '+' signs and leading zeros), so
    checking the type byte of each array and element where it must be proves, by induction,
    that every request was an array of bulk strings and finds where the next one starts.
    """
    pos = 0
    digits = _DIGITS_LEN
    try:
        for command in commands:
            if type(command) is not list or chunk[pos] != 0x2A:  # '*'
                return -1
            count = len(command)
            pos += 3 + (digits[count] if count < 10000 else len(str(count)))
            for arg in command:
                if type(arg) is not bytes or chunk[pos] != 0x24:  # '$'
                    return -1
                size = len(arg)
                pos += size + 5 + (digits[size] if size < 10000 else len(str(size)))
    except IndexError:
        return -1
    return pos


_c: Any
try:  # railcar's own C parser (src/railcar/proto/_resp.c), built at install when a compiler is there
    from railcar.proto import _resp as _c
except ImportError:  # pragma: no cover - the pure-Python and hiredis parsers remain
    _c = None
else:
    _c.configure(RespProtocolError, QueryBufferOverflow, split_inline)

#: Every request parser kind, fastest first (``auto`` picks the first one available).
PARSERS: Final = ("c", "hiredis", "python")
AnyParser: TypeAlias = "RequestParser | HiredisRequestParser | CRequestParser"


def parser_available(kind: str) -> bool:
    """True if request parser ``kind`` (one of PARSERS) can be made here."""
    if kind == "c":
        return _c is not None
    if kind == "hiredis":
        return _hiredis is not None
    return kind == "python"


def new_parser(max_buffer: int = 1 << 30, kind: str = "auto") -> AnyParser:
    """A request parser: ``auto`` is the fastest available (C, then hiredis, then pure Python).

    Raises ValueError for an unknown kind or one not available here.
    """
    kind = choose(kind, PARSERS, parser_available, "parser")
    if kind == "c":
        parser: AnyParser = _c.CRequestParser(max_buffer)
        return parser
    if kind == "hiredis":
        return HiredisRequestParser(max_buffer)
    return RequestParser(max_buffer)


# -- replies ------------------------------------------------------------------------------------


class Simple:
    """A simple string reply (``+OK``)."""

    __slots__ = ("encoded", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.encoded = b"+" + text.encode() + b"\r\n"

    def __repr__(self) -> str:
        return f"Simple({self.text!r})"


class Error:
    """An error reply; ``text`` starts with its code (``ERR ...``, ``WRONGTYPE ...``)."""

    __slots__ = ("encoded", "text")

    def __init__(self, text: str) -> None:
        # Redis replaces newlines so that an error never breaks the protocol.
        self.text = text.replace("\r", " ").replace("\n", " ")
        self.encoded = b"-" + self.text.encode("utf-8", "surrogateescape") + b"\r\n"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Error) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"Error({self.text!r})"


class Verbatim:
    """A verbatim string (RESP3 ``=``, a bulk string in RESP2), e.g. INFO's text."""

    __slots__ = ("data", "format")

    def __init__(self, data: bytes, format: str = "txt") -> None:  # noqa: A002 - RESP's own word
        self.data = data
        self.format = format


class _NullArray:
    """The null array (``*-1`` in RESP2): EXEC of a transaction a WATCH aborted."""

    __slots__ = ()


NULL_ARRAY: Final = _NullArray()
OK: Final = Simple("OK")
QUEUED: Final = Simple("QUEUED")
PONG: Final = Simple("PONG")

#: What a reply may be: bytes (bulk), int, None (null), bool, float (double), str (simple),
#: Simple, Error, Verbatim, NULL_ARRAY, and lists, tuples, dicts and sets of replies.
Reply = Any

_SMALL_INTS: Final = [b":%d\r\n" % i for i in range(-1, 1024)]


def _format_double(value: float) -> bytes:
    """A double as Redis prints it (``%.17g``, with inf and nan spelled its way)."""
    if math.isnan(value):
        return b"nan"
    if value in (float("inf"), float("-inf")):
        return b"inf" if value > 0 else b"-inf"
    return b"%.17g" % value


def encode_reply(value: Any, out: bytearray, resp3: bool = False) -> None:
    """Append ``value`` encoded as RESP2 (or RESP3) to ``out``; raises TypeError for an unknown type."""
    kind = type(value)
    if kind is bytes:
        out += b"$%d\r\n" % len(value)
        out += value
        out += b"\r\n"
    elif kind is Simple or kind is Error:
        out += value.encoded
    elif kind is int:
        if -1 <= value < 1023:
            out += _SMALL_INTS[value + 1]
        else:
            out += b":%d\r\n" % value
    elif value is None:
        out += b"_\r\n" if resp3 else b"$-1\r\n"
    elif kind is list or kind is tuple:
        out += b"*%d\r\n" % len(value)
        for item in value:
            encode_reply(item, out, resp3)
    elif kind is str:
        out += b"+" + value.encode() + b"\r\n"
    elif kind is bool:
        if resp3:
            out += b"#t\r\n" if value else b"#f\r\n"
        else:
            out += b":1\r\n" if value else b":0\r\n"
    elif kind is float:
        text = _format_double(value)
        if resp3:
            out += b"," + text + b"\r\n"
        else:
            out += b"$%d\r\n%s\r\n" % (len(text), text)
    elif kind is dict:
        out += (b"%%%d\r\n" if resp3 else b"*%d\r\n") % (len(value) * (1 if resp3 else 2))
        for key, item in value.items():
            encode_reply(key, out, resp3)
            encode_reply(item, out, resp3)
    elif kind is set or kind is frozenset:
        out += (b"~%d\r\n" if resp3 else b"*%d\r\n") % len(value)
        for item in value:
            encode_reply(item, out, resp3)
    elif kind is Verbatim:
        data: bytes = value.data
        if resp3:
            out += b"=%d\r\n%s:" % (len(data) + 4, value.format.encode())
            out += data
        else:
            out += b"$%d\r\n" % len(data)
            out += data
        out += b"\r\n"
    elif value is NULL_ARRAY:
        out += b"_\r\n" if resp3 else b"*-1\r\n"
    else:
        raise TypeError(f"cannot encode {kind.__name__} as a RESP reply")


def encode_command(*args: bytes | str | int) -> bytes:
    """One request as a RESP array of bulk strings (what clients send)."""
    out = bytearray(b"*%d\r\n" % len(args))
    for arg in args:
        raw = arg if isinstance(arg, bytes) else str(arg).encode()
        out += b"$%d\r\n%s\r\n" % (len(raw), raw)
    return bytes(out)
