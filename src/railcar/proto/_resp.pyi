"""Type stub of the C RESP request parser (_resp.c)."""

from collections.abc import Callable

from railcar.proto.resp import Buffer

def configure(
    protocol_error: type[Exception],
    overflow_error: type[Exception],
    split_inline: Callable[[bytes], list[bytes] | None],
) -> None:
    """Hand over RespProtocolError, QueryBufferOverflow and split_inline (once, from resp.py)."""

class CRequestParser:
    """RESP request parser in C, with RequestParser's behaviour."""

    max_buffer: int
    authenticated: bool
    def __init__(self, max_buffer: int = ...) -> None: ...
    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned."""
    @property
    def at_boundary(self) -> bool:
        """True between requests."""
    def feed(self, data: Buffer) -> None:
        """Add received bytes; raises QueryBufferOverflow when the unparsed bytes pass max_buffer."""
    def next_command(self) -> list[bytes] | None:
        """The next complete request (possibly empty: skip it), or None; raises RespProtocolError."""
    def take_ready(self) -> list[list[bytes]]:
        """Every complete non-empty request; raises RespProtocolError only when none comes before it."""
    def put_back(self, commands: list[list[bytes]]) -> None:
        """Return requests taken with take_ready and not run, to be returned first."""
