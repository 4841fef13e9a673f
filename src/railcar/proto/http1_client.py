"""HTTP/1.1 response framing for clients, sans I/O: where each response in a byte stream ends, and its status.

Enough of RFC 9112 for a client that pipelines requests on keep-alive connections:
status line, ``Content-Length``, ``chunked`` transfer coding (with extensions and
trailers), bodiless statuses (1xx, 204, 304), bodies delimited by the close of the
connection, and ``Connection: close``.  Header values other than those are not decoded.
"""

from __future__ import annotations

from typing import Final

from railcar.errors import ProtocolError

MAX_HEAD: Final = 64 * 1024
_MAX_CHUNK_LINE: Final = 1024

_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _TRAILERS, _UNTIL_CLOSE = range(6)


def request(method: str, target: str, host: str, extra_headers: str = "") -> bytes:
    """Encode one HTTP/1.1 request without a body."""
    return f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n{extra_headers}\r\n".encode("latin-1")


class ResponseReader:
    """Splits a stream of HTTP/1.x responses to requests without bodies (GET) into statuses.

    ``feed`` returns the status codes of the responses it completed (interim 1xx
    responses are skipped) and keeps any incomplete tail for the next call.
    ``closing`` turns True once a response says the server will close the connection.
    """

    __slots__ = ("_buf", "_left", "_state", "_status", "closing")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._state = _HEAD
        self._left = 0
        self._status = 0
        self.closing = False

    @property
    def idle(self) -> bool:
        """No response is partly read."""
        return self._state == _HEAD and not self._buf

    def feed(self, data: bytes | bytearray | memoryview) -> list[int]:
        """Return the statuses of the responses completed by ``data``; raises ProtocolError on bad framing."""
        buf = self._buf
        buf += data
        done: list[int] = []
        pos = 0
        while True:
            state = self._state
            if state == _HEAD:
                end = buf.find(b"\r\n\r\n", pos)
                if end < 0:
                    if len(buf) - pos > MAX_HEAD:
                        raise ProtocolError(f"response head longer than {MAX_HEAD} bytes")
                    break
                self._head(bytes(buf[pos:end]))
                pos = end + 4
                if self._state == _HEAD and self._status >= 200:
                    done.append(self._status)
            elif state == _BODY:
                if len(buf) - pos < self._left:  # consume what is here: a body is never held whole
                    self._left -= len(buf) - pos
                    pos = len(buf)
                    break
                pos += self._left
                self._state = _HEAD
                done.append(self._status)
            elif state == _CHUNK_SIZE:
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    if len(buf) - pos > _MAX_CHUNK_LINE:
                        raise ProtocolError("chunk size line too long")
                    break
                size = _chunk_size(bytes(buf[pos:end]))
                pos = end + 2
                if size:
                    self._left, self._state = size, _CHUNK_DATA
                else:
                    self._state = _TRAILERS
            elif state == _CHUNK_DATA:
                if len(buf) - pos < self._left + 2:
                    taken = min(len(buf) - pos, self._left)
                    self._left -= taken
                    pos += taken
                    break
                pos += self._left
                if buf[pos : pos + 2] != b"\r\n":
                    raise ProtocolError("chunk data not followed by CRLF")
                pos += 2
                self._state = _CHUNK_SIZE
            elif state == _TRAILERS:
                if buf[pos : pos + 2] == b"\r\n":
                    pos += 2
                else:
                    end = buf.find(b"\r\n\r\n", pos)
                    if end < 0:
                        if len(buf) - pos > MAX_HEAD:
                            raise ProtocolError(f"trailers longer than {MAX_HEAD} bytes")
                        break
                    pos = end + 4
                self._state = _HEAD
                done.append(self._status)
            else:  # _UNTIL_CLOSE: everything until the server closes is body
                pos = len(buf)
                break
        del buf[:pos]
        return done

    def eof(self) -> list[int]:
        """Signal the end of the stream; return a response it completes, raises ProtocolError if cut short."""
        if self._state == _UNTIL_CLOSE:
            self._state = _HEAD
            return [self._status]
        if self._state != _HEAD or self._buf:
            raise ProtocolError("connection closed in the middle of a response")
        return []

    def _head(self, head: bytes) -> None:
        line, _, fields = head.partition(b"\r\n")
        parts = line.split(b" ", 2)
        if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") or not _is_status(parts[1]):
            raise ProtocolError(f"bad status line {line[:80]!r}")
        status = int(parts[1])
        self._status = status
        lower = b"\r\n" + fields.lower()
        connection = _field(lower, b"connection")
        if (connection is not None and b"close" in connection) or (
            parts[0] == b"HTTP/1.0" and (connection is None or b"keep-alive" not in connection)
        ):
            self.closing = True
        if status < 200 or status in (204, 304):
            self._state = _HEAD
            return
        coding = _field(lower, b"transfer-encoding")
        if coding is not None and coding.rstrip().endswith(b"chunked"):
            self._state = _CHUNK_SIZE
            return
        length = _field(lower, b"content-length")
        if length is None:
            self._state = _UNTIL_CLOSE
            self.closing = True
            return
        if not length.isdigit():
            raise ProtocolError(f"bad Content-Length {length[:40]!r}")
        self._left = int(length)
        self._state = _BODY if self._left else _HEAD


def _is_status(code: bytes) -> bool:
    return len(code) == 3 and code.isdigit()


def _field(lower_fields: bytes, name: bytes) -> bytes | None:
    """The stripped value of header ``name`` in CRLF-led, lower-cased header lines, or None."""
    start = lower_fields.find(b"\r\n" + name + b":")
    if start < 0:
        return None
    start += len(name) + 3
    end = lower_fields.find(b"\r\n", start)
    return lower_fields[start : end if end >= 0 else len(lower_fields)].strip()


def _chunk_size(line: bytes) -> int:
    digits = line.split(b";", 1)[0].strip()
    if not digits or len(digits) > 16 or digits.strip(b"0123456789abcdefABCDEF"):
        raise ProtocolError(f"bad chunk size {line[:40]!r}")
    return int(digits, 16)
