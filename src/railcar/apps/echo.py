"""The echo service: every byte received is sent back."""

from __future__ import annotations

from railcar.engine.api import Conn, Handler


class EchoHandler(Handler):
    """Writes back whatever it receives; works on every engine."""

    def on_data(self, conn: Conn, data: memoryview) -> None:
        """Echo ``data``."""
        conn.write(data)
