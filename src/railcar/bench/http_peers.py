"""The HTTP peers of ``railcar bench http``: socketify and granian serving the same plaintext route.

Each runs in its fastest documented setting (PEERS.md): socketify's native App with a
request/response object pool, granian's RSGI interface on one single-threaded worker.
Run as ``python -m railcar.bench.http_peers socketify PORT``; granian imports ``rsgi_app``.
"""

from __future__ import annotations

import sys
from typing import Any, Final

PLAINTEXT: Final = b"Hello, World!"
_HEADERS: Final = [("content-type", "text/plain")]


async def rsgi_app(scope: Any, protocol: Any) -> None:
    """Granian RSGI app: ``Hello, World!`` on ``/plaintext``, 404 elsewhere."""
    if scope.path == "/plaintext":
        protocol.response_bytes(200, _HEADERS, PLAINTEXT)
    else:
        protocol.response_bytes(404, _HEADERS, b"Not Found\n")


def run_socketify(port: int) -> None:
    """Serve the plaintext route with socketify on 127.0.0.1:``port`` until killed."""
    from socketify import App, AppListenOptions  # noqa: PLC0415 - a peer, imported only where it runs

    app = App(request_response_factory_max_items=200_000)
    app.get("/plaintext", lambda res, req: res.send(PLAINTEXT, content_type=b"text/plain"))
    app.any("/*", lambda res, req: res.send(b"Not Found\n", status=404))

    def ready(config: Any) -> None:
        sys.stdout.write(f"listening on 127.0.0.1:{config.port}\n")
        sys.stdout.flush()

    app.listen(AppListenOptions(port=port, host="127.0.0.1"), ready)
    app.run()


if __name__ == "__main__":
    if sys.argv[1:2] != ["socketify"] or len(sys.argv) != 3:
        sys.exit("usage: python -m railcar.bench.http_peers socketify PORT")
    run_socketify(int(sys.argv[2]))
