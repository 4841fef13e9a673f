"""The HTTP benchmark routes (TechEmpower style): ``GET /plaintext`` and ``GET /json``."""

from __future__ import annotations

from typing import Final

import msgspec

from railcar.http.app import NOT_FOUND, Request, Response

_encode = msgspec.json.Encoder().encode
# Built once: a Response is immutable and encodes its head when made.
_PLAINTEXT: Final = Response(b"Hello, World!", content_type="text/plain")
_METHOD_NOT_ALLOWED: Final = Response(b"", 405, [(b"Allow", b"GET, HEAD")])


def hello_app(request: Request) -> Response:
    """Answer the benchmark routes; anything else is 404 and other methods 405."""
    path = request.target
    if path[:1] != b"/":  # absolute-form (http://host/path): routed by its path
        path = request.raw_path
    if path == b"/plaintext":
        if request.method != "GET" and request.method != "HEAD":  # noqa: PLR1714 - two compares are cheaper
            return _METHOD_NOT_ALLOWED
        return _PLAINTEXT
    if path == b"/json":
        if request.method != "GET" and request.method != "HEAD":  # noqa: PLR1714
            return _METHOD_NOT_ALLOWED
        return Response(_encode({"message": "Hello, World!"}), content_type="application/json")
    return NOT_FOUND
