"""Type stub of the C binding of llhttp (_http1.c), the twin of http1.ServerConnection."""

from collections.abc import Callable

from railcar.proto.http1 import Event

def configure(
    request: type,
    body: type,
    rejected: type,
    end: object,
    valid_hosts: set[bytes],
    checked_head: Callable[..., tuple[bool, bool]],
    bad_request: type[BaseException],
) -> None:
    """Hand over what the parser builds and calls (once, from http1.py)."""

class Connection:
    """One server-side HTTP/1.1 connection's input (see http1.ServerConnection, its twin)."""

    reading: bool
    client: object
    server: object
    @property
    def in_request(self) -> bool:
        """A request has begun and not ended."""

    def __init__(
        self,
        max_head: int,
        max_headers: int,
        max_target: int,
        max_body: int,
        client: object = None,
        server: object = None,
    ) -> None: ...
    def receive(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Parse data and return the events it completed; raises RuntimeError if re-entered, MemoryError."""
