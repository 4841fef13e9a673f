"""The echo service: every byte (or datagram) received is sent back."""

from __future__ import annotations

from railcar.engine.api import Address, Buffer, Conn, DatagramEndpoint, DatagramHandler, Handler


class EchoHandler(Handler):
    """Writes back whatever it receives; works on every engine."""

    takes_bytes = True

    def on_data(self, conn: Conn, data: Buffer) -> None:
        """Echo ``data``."""
        conn.write(data)


class DatagramEchoHandler(DatagramHandler):
    """Sends every datagram back to its sender; works on every datagram engine."""

    def on_datagram(self, endpoint: DatagramEndpoint, addr: Address, data: Buffer) -> None:
        """Echo ``data`` to ``addr``."""
        endpoint.send_to(addr, data)
