"""The HTTP benchmark routes (TechEmpower style): ``GET /plaintext`` and ``GET /json``."""

from __future__ import annotations

from typing import Final

import msgspec

from railcar.http.app import NOT_FOUND, Request, Response

_PLAINTEXT: Final = b"Hello, World!"
_encode = msgspec.json.Encoder().encode


def hello_app(request: Request) -> Response:
    """Answer the benchmark routes; anything else is 404 and other methods 405."""
    path = request.target
    if path == b"/plaintext":
        if request.method != "GET" and request.method != "HEAD":  # noqa: PLR1714 - two compares are cheaper
            return Response(b"", 405, [(b"Allow", b"GET, HEAD")])
        return Response(_PLAINTEXT, content_type="text/plain")
    if path == b"/json":
        if request.method != "GET" and request.method != "HEAD":  # noqa: PLR1714
            return Response(b"", 405, [(b"Allow", b"GET, HEAD")])
        return Response(_encode({"message": "Hello, World!"}), content_type="application/json")
    return NOT_FOUND
