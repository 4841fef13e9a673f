"""The RFC 9112 rules about a request head that llhttp does not enforce itself, checked once it is complete.

llhttp already refuses (lenient flags off, as httptools leaves them): Transfer-Encoding
with Content-Length, duplicate or malformed Content-Length, Transfer-Encoding whose last
coding is not chunked, malformed chunk sizes and extensions, invalid method, target and
header characters, bare CR or LF, obsolete line folding.  What it lets through, and this
module refuses: codings before ``chunked`` (``gzip, chunked``), Transfer-Encoding in an
HTTP/1.0 request, a missing or repeated Host (RFC 9112 3.2), HTTP versions other than
1.0 and 1.1 (llhttp takes 0.9 and 2.0 request lines), request-target forms the method
does not allow, CONNECT, and an Upgrade request with a body (llhttp would skip the body
as upgraded bytes, so serving the request as plain HTTP would read that body as the
next request).
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple


class BadRequest(Exception):
    """A request that must be answered with ``status`` and a close, for ``reason``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason


class Framing(NamedTuple):
    """How a checked request's body is delimited, and whether it asked for an upgrade."""

    content_length: int
    chunked: bool
    upgrade: bool
    expect_continue: bool = False
    close: bool = False  # a Connection header names close (it wins over keep-alive, RFC 9112 9.3)


# RFC 3986 reg-name / IP-literal / port characters: Host is an authority, nothing else.
_HOST: Final = re.compile(rb"[A-Za-z0-9\-._~%!$&'()*+,;=:\[\]]*")
_NO_BODY: Final = Framing(0, False, False)
#: The fields check_head looks at (lower-cased), and those that decide llhttp's keep-alive
#: (it reads Proxy-Connection as Connection).
HEAD_FIELDS: Final = frozenset(
    (
        b"host",
        b"content-length",
        b"transfer-encoding",
        b"upgrade",
        b"expect",
        b"connection",
        b"proxy-connection",
    )
)
#: Host values check_head found valid, so that a connection sending the same Host on every
#: request has it matched once; bounded (emptied when full), since the values are the client's.
#: A head whose only ``HEAD_FIELDS`` field is one Host in here, in an HTTP/1.1 request with an
#: origin-form target and a method other than CONNECT, passes check_head and has no body.
valid_hosts: set[bytes] = set()
_VALID_HOSTS_KEPT: Final = 256


def check_head(method: bytes, target: bytes, version: str, headers: list[tuple[bytes, bytes]]) -> Framing:
    """Return the framing of a complete request head; raises BadRequest for a rule llhttp does not check."""
    if version != "1.1" and version != "1.0":  # noqa: PLR1714 - two compares beat a tuple scan here
        if version == "0.9":
            raise BadRequest(400, "request line without an HTTP version")
        raise BadRequest(505, f"HTTP/{version} is not supported")
    if method == b"CONNECT":
        raise BadRequest(501, "CONNECT is not supported")
    _check_target(method, target)
    content_length: list[bytes] = []
    transfer_encoding: list[bytes] = []
    hosts = 0
    upgrade = False
    expect_continue = False
    close = False
    for name, value in headers:
        key = name.lower()
        if key == b"host":
            hosts += 1
            if value not in valid_hosts:
                if _HOST.fullmatch(value) is None:
                    raise BadRequest(400, "invalid Host header")
                if len(valid_hosts) >= _VALID_HOSTS_KEPT:
                    valid_hosts.clear()
                valid_hosts.add(value)
        elif key == b"content-length":
            content_length.append(value)
        elif key == b"transfer-encoding":
            transfer_encoding.append(value)
        elif key == b"upgrade":
            upgrade = True
        elif key == b"connection":
            close = close or b"close" in (token.strip() for token in value.lower().split(b","))
        elif key == b"expect":
            # RFC 9110 10.1.1: 100-continue is the only expectation defined; refuse the others.
            if value.lower() != b"100-continue":
                raise BadRequest(417, "only the 100-continue expectation is supported")
            expect_continue = version == "1.1"  # an HTTP/1.0 client gets no 1xx (RFC 9110 15.2)
    if hosts > 1 or (hosts == 0 and version == "1.1"):
        raise BadRequest(400, "an HTTP/1.1 request needs exactly one Host header")
    if not content_length and not transfer_encoding:
        return Framing(0, False, upgrade, close=close) if upgrade or close else _NO_BODY
    if transfer_encoding:
        if content_length:
            raise BadRequest(400, "both Transfer-Encoding and Content-Length")
        if version == "1.0":
            raise BadRequest(400, "Transfer-Encoding in an HTTP/1.0 request")
        if len(transfer_encoding) != 1 or transfer_encoding[0].strip().lower() != b"chunked":
            raise BadRequest(400, "Transfer-Encoding other than one chunked coding")
        framing = Framing(0, True, upgrade, expect_continue, close)
    else:
        if len(content_length) != 1 or not content_length[0].isdigit():
            raise BadRequest(400, "invalid Content-Length")
        # llhttp has read it as a 64-bit number, so without its leading zeros (which it allows,
        # and which could pass int()'s 4,300-digit limit) it is at most 20 digits.
        framing = Framing(int(content_length[0].lstrip(b"0") or b"0"), False, upgrade, expect_continue, close)
    if upgrade and (framing.chunked or framing.content_length):
        raise BadRequest(400, "an Upgrade request with a body")
    return framing


def _check_target(method: bytes, target: bytes) -> None:
    if target[:1] == b"/":
        return
    if target == b"*":
        if method == b"OPTIONS":
            return
        raise BadRequest(400, "asterisk-form target outside OPTIONS")
    lowered = target[:8].lower()
    if lowered.startswith((b"http://", b"https://")):
        return
    raise BadRequest(400, "invalid request target")
