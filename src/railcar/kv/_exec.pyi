"""Type stub of the C executor of hot requests (_exec.c)."""

from railcar.kv.store import Database

def configure(deque: type, key_overhead: int, element_overhead: int, int_size: int) -> None:
    """Hand over the list type and the store's size estimates (once, from executor.py)."""

def run(
    batch: list[list[bytes]], start: int, db: Database, out: bytearray, resp3: bool, flush_at: int
) -> int:
    """Run the batch's plain hot requests from ``start``; the index of the first one not run.

    Raises MemoryError (the store's counters then cover what ran), TypeError for arguments of the wrong type.
    """
