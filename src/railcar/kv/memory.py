"""maxmemory: Redis's memory-size notation, and when a command is refused for memory.

railcar evicts nothing (Redis's default policy, ``noeviction``): past ``maxmemory``,
commands that may grow the data (flag ``denyoom``) get Redis's OOM error, while reads,
deletions and expiry go on, so a client can free memory itself.  The limit is compared
with the same estimate INFO reports as ``used_memory``.
"""

from __future__ import annotations

import re
from typing import Final

from railcar.proto.resp import Error

OOM: Final = Error("OOM command not allowed when used memory > 'maxmemory'.")
POLICIES: Final = (
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "noeviction",
)
SUPPORTED_POLICY: Final = "noeviction"

_UNITS: Final = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1024,
    "m": 1000**2,
    "mb": 1024**2,
    "g": 1000**3,
    "gb": 1024**3,
}
_SIZE = re.compile(r"(\d+)([a-z]*)")


def parse_memory(text: str) -> int:
    """Bytes in Redis's notation (``100mb`` is 100 × 1024², ``100m`` 100 × 1000²); raises ValueError."""
    found = _SIZE.fullmatch(text.strip().lower())
    if found is None or found.group(2) not in _UNITS:
        raise ValueError(f"not a memory size: {text!r} (bytes, or a number with k, kb, m, mb, g or gb)")
    return int(found.group(1)) * _UNITS[found.group(2)]
