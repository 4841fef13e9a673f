"""The waiter protocol: where a caller waits for one outcome, set at most once by a sans-I/O core."""

from __future__ import annotations

from typing import Any, Protocol


class Waiter(Protocol):
    """Where a caller waits for an outcome: an ``asyncio.Future`` or a thread's wake-up."""

    def done(self) -> bool:
        """True once an outcome is set (or the wait was cancelled)."""
        ...

    def set_result(self, result: Any, /) -> None:
        """Deliver the reply."""
        ...

    def set_exception(self, exception: BaseException, /) -> None:
        """Deliver the failure."""
        ...
