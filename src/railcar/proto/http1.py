"""HTTP/1.1 server connection, sans I/O: request bytes in, request events out, responses out as bytes.

llhttp does the parsing, through httptools (``ServerConnection``) or through railcar's C
binding of the same llhttp (``_http1.c``, its twin, chosen by ``input_factory``); this
module adds what llhttp leaves to its caller: limits (head size and header count 431,
request target 414, body 413) and the RFC 9112 rules llhttp is lenient about (see
``http1_checks``).  A request that breaks
any rule ends the connection's input: ``receive`` returns a ``Rejected`` event and
nothing more, and the caller answers it (``reject_response``) and closes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import unquote_to_bytes

import httptools

from railcar.choices import choose
from railcar.proto import http1_checks
from railcar.proto.http1_checks import HEAD_FIELDS, BadRequest, valid_hosts
from railcar.proto.http1_response import CLOSE, header_lines, response_prefix, status_line

__all__ = [
    "CONTINUE",
    "END",
    "PARSERS",
    "BadRequest",
    "Body",
    "EndOfRequest",
    "Limits",
    "Rejected",
    "Request",
    "RequestInput",
    "ServerConnection",
    "checked_head",
    "input_factory",
    "parser_available",
    "reject_response",
    "status_line",
]


@dataclass(frozen=True, slots=True)
class Limits:
    """How much of a request the server holds; going over one is answered with its status and a close.

    ``max_head`` (431) counts the request line and header lines; ``max_headers`` (431)
    the header lines; ``max_target`` (414) the request target; ``max_body`` (413) the
    body's decoded bytes, refused from its Content-Length before any of it is read.
    """

    max_head: int = 16 * 1024
    max_headers: int = 100
    max_target: int = 8 * 1024
    max_body: int = 1024 * 1024

    def __post_init__(self) -> None:
        """Check the limits are usable; raises ValueError when one is not positive."""
        for name in ("max_head", "max_headers", "max_target", "max_body"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


DEFAULT_LIMITS: Final = Limits()
_new: Final = object.__new__
_TEXT_PLAIN: Final = header_lines([(b"Content-Type", b"text/plain; charset=utf-8")])


class Request:
    """One request: its head, complete and checked, is the first event of every request.

    ``body`` is empty until the request ends (the server fills it before an app sees the
    request); ``client`` and ``server`` are the connection's addresses; ``headers`` keep names as
    sent and values without surrounding whitespace; ``version`` is ``"1.1"`` or ``"1.0"``.
    ``expects_continue`` is True for an HTTP/1.1 request with a body that sent
    ``Expect: 100-continue``: its client may wait for ``CONTINUE`` before sending the body.
    """

    __slots__ = (
        "body",
        "client",
        "expects_continue",
        "headers",
        "keep_alive",
        "method",
        "server",
        "target",
        "version",
    )

    def __init__(
        self,
        method: str,
        target: bytes,
        version: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes = b"",
        keep_alive: bool = True,
        client: object = None,
        server: object = None,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.client = client
        self.server = server
        self.expects_continue = False

    def __repr__(self) -> str:
        return f"Request({self.method!r}, {self.target!r}, {self.version!r}, {self.headers!r})"

    @property
    def raw_path(self) -> bytes:
        """The target's path up to ``?``, still percent-encoded (of an absolute-form target, its path)."""
        path = self.target.partition(b"?")[0]
        authority = self.authority
        if authority is not None:
            path = path[path.index(b"//") + 2 + len(authority) :] or b"/"
        return path

    @property
    def authority(self) -> bytes | None:
        """The host of an absolute-form target (``http://host/path``): it replaces Host (RFC 9112 3.2.2)."""
        target = self.target
        if target[:1] == b"/" or not target[:8].lower().startswith((b"http://", b"https://")):
            return None
        rest = target[target.index(b"//") + 2 :]
        end = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest))
        return rest[:end]

    @property
    def path(self) -> str:
        """The target's path, percent-decoded (as UTF-8, undecodable bytes escaped)."""
        return unquote_to_bytes(self.raw_path).decode("utf-8", "surrogateescape")

    @property
    def query(self) -> bytes:
        """The target after ``?`` (empty without one)."""
        return self.target.partition(b"?")[2]

    def header(self, name: str) -> bytes | None:
        """The value of the first header called ``name`` (any case), or None."""
        wanted = name.lower().encode("latin-1")
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None


class Body:
    """A piece of the current request's decoded body (chunked framing removed)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"Body({self.data!r})"


class EndOfRequest:
    """The current request is complete; the next event, if any, starts another one."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "EndOfRequest()"


#: The one ``EndOfRequest`` event ``receive`` returns (compare with ``is``).
END: Final = EndOfRequest()


class Rejected:
    """The input broke a rule: answer ``status`` and close; the connection reads nothing more."""

    __slots__ = ("reason", "status")

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason

    def __repr__(self) -> str:
        return f"Rejected({self.status}, {self.reason!r})"


Event = Request | Body | EndOfRequest | Rejected


class _InputEnded(Exception):
    """Stops httptools after a request that ended the connection's input (not a failure)."""


class RequestInput(Protocol):
    """What a server reads requests through: ``ServerConnection`` or its C twin (``_http1.c``)."""

    reading: bool
    client: object
    server: object

    @property
    def in_request(self) -> bool:
        """True while a request has begun and not ended."""

    def receive(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Parse ``data`` and return the events it completed."""


class ServerConnection:
    """One server-side HTTP/1.1 connection's input: feed it bytes, get request events.

    Events come in order: ``Request`` (its head), any ``Body``, ``EndOfRequest``, for each
    request, and pipelined requests follow one another; a ``Rejected`` event is the
    last one ever returned.  ``reading`` turns False after a request that ends the
    connection (HTTP/1.0 without keep-alive, ``Connection: close``) or a rejection:
    bytes after it are ignored.  ``in_request`` is True while a request has begun and not
    ended (its head or body is partly received).  ``client`` and ``server`` (the
    connection's addresses, if the caller knows them) are set on every ``Request``.
    """

    __slots__ = (
        "_body_size",
        "_continuing_head",
        "_events",
        "_failure",
        "_headers",
        "_in_head",
        "_keep_alive",
        "_limits",
        "_max_head",
        "_max_headers",
        "_max_target",
        "_measure_heads",
        "_parser",
        "_raw_head",
        "_target",
        "client",
        "in_request",
        "reading",
        "server",
    )

    def __init__(self, limits: Limits = DEFAULT_LIMITS, client: object = None, server: object = None) -> None:
        self._limits = limits
        # Copied out of ``limits``: the callbacks run per request and read them directly.
        self._max_head = limits.max_head
        self._max_headers = limits.max_headers
        self._max_target = limits.max_target
        self._parser = httptools.HttpRequestParser(self)
        self._events: list[Event] = []
        self._target = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._measure_heads = True
        self._raw_head = 0  # bytes fed while a head was incomplete, after the read it began in
        self._continuing_head = False
        self._in_head = False
        self._body_size = 0
        self._keep_alive = True
        self.in_request = False
        self._failure: BadRequest | None = None
        self.reading = True
        self.client = client
        self.server = server

    def receive(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Parse ``data`` and return the events it completed; never raises on bad input (see Rejected)."""
        if not self.reading:
            return []
        events: list[Event] = []
        self._events = events
        # A head that begins and ends within a read no longer than max_head fits max_head:
        # only the heads of a longer read, or one that began in an earlier read, are measured.
        self._measure_heads = self._continuing_head or len(data) > self._max_head
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # llhttp stops after a request with Upgrade and Connection: upgrade.  railcar
            # upgrades to nothing: the request (bodiless, or it was refused) is served as plain
            # HTTP and is the connection's last (its keep_alive is False), so nothing follows.
            pass
        except httptools.HttpParserError as exc:
            failure = self._failure
            if failure is not None:
                self._reject(failure.status, failure.reason)
            elif self.reading:  # after a closing request llhttp refuses the rest: ignored, not an error
                self._reject(400, str(exc) or "malformed request")
        if self._in_head or self._headers:  # a head, or a chunked body's trailer fields, unfinished
            self._count_partial_head(len(data))
        return events

    def _count_partial_head(self, size: int) -> None:
        # httptools buffers a header name or value until it ends, out of our sight, so an
        # unfinished head is bounded by its bytes on the wire: every read after the one it began
        # in counts whole (the first holds at most one read, then checked exactly at its end).
        if not self.reading:
            return
        if self._continuing_head:
            self._raw_head += size
            if self._raw_head > self._max_head:
                self._reject(431, f"request head over {self._max_head} bytes")
        else:
            self._continuing_head = True

    def _fail(self, status: int, reason: str) -> BadRequest:
        # Kept here, not only raised: httptools turns an exception in a callback into its own.
        failure = self._failure = BadRequest(status, reason)
        return failure

    def _reject(self, status: int, reason: str) -> None:
        self.reading = False
        self._events.append(Rejected(status, reason))

    # -- httptools callbacks (called during feed_data, once or more per request: kept lean) -------

    def on_message_begin(self) -> None:
        """Start a request (httptools callback); raises _InputEnded after a request that closed the input."""
        if not self.reading:  # llhttp kept alive what checked_head closed: the rest of the read is not read
            raise _InputEnded
        self.in_request = True
        self._in_head = True

    def on_url(self, url: bytes) -> None:
        """Collect a piece of the request target; raises BadRequest (414) over the limit."""
        target = self._target = self._target + url  # nearly always one piece: b"" + url is url
        if len(target) > self._max_target:
            raise self._fail(414, f"request target over {self._max_target} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        """Collect a header line; raises BadRequest (431) past the count limit (size: at the head's end)."""
        headers = self._headers
        # llhttp drops the whitespace before a value, not after it: neither is part of it (RFC 9112 5).
        headers.append((name, value.rstrip(b" \t")))
        if len(headers) > self._max_headers:
            raise self._fail(431, f"more than {self._max_headers} header lines")

    def on_headers_complete(self) -> None:
        """Check the head and emit it; raises BadRequest for what llhttp let through or a limit."""
        parser = self._parser
        method = parser.get_method()
        target = self._target
        headers = self._headers
        if self._measure_heads:
            # The fewest bytes the head can have taken: a header line adds ":" and CRLF to its
            # name and value, the request line two spaces, "HTTP/1.1" and CRLF, the blank line
            # CRLF.  Never more than on the wire, so a head that fits max_head in one read (not
            # measured) fits here too.
            size = _lines_size(headers) + len(method) + len(target) + 14
            if size > self._max_head:
                raise self._fail(431, f"request head over {self._max_head} bytes")
        keep_alive = parser.should_keep_alive()
        expects_continue = False
        plain = keep_alive and target[:1] == b"/"
        if plain:
            # The common head (see http1_checks.valid_hosts), checked here without a call:
            # HTTP/1.1, since llhttp keeps alive without a Connection (or Proxy-Connection)
            # header only for 1.1 (the one version it accepts with a minor above 0), an
            # origin-form target, one Host already found valid and no other field check_head
            # looks at.
            host = None
            for name, value in headers:
                key = name.lower()
                if key in HEAD_FIELDS:
                    if host is not None or key != b"host":
                        plain = False
                        break
                    host = value
            plain = plain and host in valid_hosts
        if plain:
            version = "1.1"  # get_http_version() would format a new string
            if method == b"CONNECT":
                raise self._fail(501, "CONNECT is not supported")
        else:
            version = parser.get_http_version()
            try:
                keep_alive, expects_continue = checked_head(
                    method, target, version, headers, keep_alive, self._limits.max_body
                )
            except BadRequest as exc:
                raise self._fail(exc.status, exc.reason) from None
            self._body_size = 0
        if self._continuing_head:
            self._continuing_head = False
            self._raw_head = 0
        self._in_head = False
        self._target = b""
        self._headers = []
        self._keep_alive = keep_alive
        # Built without Request.__init__: a call through the type costs more than the fields.
        request = _new(Request)
        request.method = method.decode("ascii")
        request.target = target
        request.version = version
        request.headers = headers
        request.body = b""
        request.keep_alive = keep_alive
        request.client = self.client
        request.server = self.server
        request.expects_continue = expects_continue
        self._events.append(request)

    def on_body(self, body: bytes) -> None:
        """Emit a piece of the body; raises BadRequest (413) past the body limit."""
        self._body_size += len(body)
        if self._body_size > self._limits.max_body:
            raise self._fail(413, f"request body over {self._limits.max_body} bytes")
        self._events.append(Body(body))

    def on_message_complete(self) -> None:
        """End a request; raises BadRequest (431) for trailer fields over max_head (httptools callback)."""
        # Measured as a head is: unless their read could not hold more than max_head.
        if self._headers and self._measure_heads and _lines_size(self._headers) > self._max_head:
            raise self._fail(431, f"trailer fields over {self._max_head} bytes")
        self._events.append(END)
        self.in_request = False
        if self._headers:
            # A chunked body's trailer fields (httptools reports them as headers): dropped,
            # as RFC 9110 allows; kept, they would become the next request's headers.
            self._headers = []
            self._continuing_head = False
            self._raw_head = 0
        if not self._keep_alive:
            self.reading = False


def _lines_size(headers: list[tuple[bytes, bytes]]) -> int:
    """The fewest bytes header lines can take on the wire: name, ``:``, value and CRLF each."""
    return sum(len(name) + len(value) + 3 for name, value in headers)


def checked_head(
    method: bytes,
    target: bytes,
    version: str,
    headers: list[tuple[bytes, bytes]],
    keep_alive: bool,
    max_body: int,
) -> tuple[bool, bool]:
    """Check an uncommon head: whether its connection stays open and its client awaits 100-continue.

    ``keep_alive`` is llhttp's verdict; an upgrade request closes the connection, and so does
    one whose Connection header names close (llhttp keeps ``keep-alive, close`` open).  Raises
    BadRequest for a rule llhttp does not check (``check_head``) or a body over ``max_body`` (413).
    """
    framing = http1_checks.check_head(method, target, version, headers)
    if framing.content_length > max_body:
        raise BadRequest(413, f"request body over {max_body} bytes")
    return (
        keep_alive and not framing.upgrade and not framing.close,
        framing.expect_continue and (framing.chunked or framing.content_length > 0),
    )


#: The interim response that tells a client waiting on ``Expect: 100-continue`` to send its body.
CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"


def reject_response(status: int, reason: str, date: bytes = b"") -> bytes:
    """The response to a ``Rejected`` event: its status, a short text body, and ``Connection: close``."""
    body = reason.encode("ascii", "replace") + b"\n"
    return response_prefix(status, _TEXT_PLAIN, len(body)) + date + CLOSE + body


def join_headers(headers: Iterable[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """Lower-cased names to values, repeated names joined with ``, `` (RFC 9110 5.3)."""
    joined: dict[bytes, bytes] = {}
    for name, value in headers:
        key = name.lower()
        joined[key] = joined[key] + b", " + value if key in joined else value
    return joined


#: The request parsers: llhttp bound by railcar's C (``_http1.c``), or llhttp through httptools.
PARSERS: Final = ("c", "httptools")

_c: Any
try:  # built at install when a compiler is there (hatch_build.py)
    from railcar.proto import _http1 as _c
except ImportError:  # pragma: no cover - depends on the build
    _c = None
else:
    _c.configure(Request, Body, Rejected, END, valid_hosts, checked_head, BadRequest)


def parser_available(kind: str) -> bool:
    """True if parser ``kind`` (one of PARSERS) can be used here."""
    return kind == "httptools" or (kind == "c" and _c is not None)


def input_factory(parser: str = "auto") -> Callable[[Limits, object, object], RequestInput]:
    """What makes a connection's ``RequestInput`` (limits, client, server); ``auto``: C where built.

    Raises ValueError for an unknown parser or one not built here.
    """
    if choose(parser, PARSERS, parser_available, "parser") == "httptools":
        return ServerConnection
    connection = _c.Connection
    most = sys.maxsize  # what C holds; a limit past it is no limit, as it is for httptools

    def new_input(limits: Limits, client: object, server: object) -> RequestInput:
        return connection(  # type: ignore[no-any-return]
            min(limits.max_head, most),
            min(limits.max_headers, most),
            min(limits.max_target, most),
            min(limits.max_body, most),
            client,
            server,
        )

    return new_input
