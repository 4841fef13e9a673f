"""The keyspace: databases of key → value with expiry, byte accounting and WATCH bookkeeping.

A value is ``bytes`` or ``int`` (string: INCR and its kin keep a counter as an int, which
saves parsing it on every increment; ``string_bytes`` gives any string as bytes, and every
reader goes through it), ``deque[bytes]`` (list), ``set[bytes]`` or ``dict[bytes, bytes]``
(hash).  Expiry is lazy (a key found past its time on lookup is deleted) and active (a sampled
sweep, Redis's ``activeExpireCycle`` in small: sample up to 20 keys with a TTL,
delete the expired, go on while more than a quarter of the sample was expired, within a
time budget).  Times are milliseconds since the epoch, read once per batch of commands
(``Store.tick``), as Redis caches the time for a command.
"""

from __future__ import annotations

import random
import time
from collections import deque
from typing import Any, Final

Value = bytes | int | deque[bytes] | set[bytes] | dict[bytes, bytes]

#: Bytes charged per key beyond its name and value (dict entry, objects): an estimate.
KEY_OVERHEAD: Final = 64
#: Bytes charged per element of a list, set or hash beyond its own bytes: an estimate.
ELEMENT_OVERHEAD: Final = 16
#: Bytes charged for a string kept as an int (Redis's int encoding holds it in the pointer's 8 bytes).
INT_SIZE: Final = 8
DATABASES: Final = 16
_SAMPLE: Final = 20


def string_bytes(value: object) -> bytes | None:
    """The bytes of a string value (an int-kept counter in decimal), None for a list, set or hash.

    Every reader of strings as bytes (the commands, kvbin, the AOF rewrite) goes through this
    one place that knows how the store holds a string.
    """
    kind = type(value)
    if kind is bytes:
        return value  # type: ignore[return-value]
    if kind is int:
        return b"%d" % value  # type: ignore[str-format]
    return None


def type_name(value: object) -> bytes:
    """The TYPE of a stored value: string, list, set or hash."""
    kind = type(value)
    if kind is bytes or kind is int:
        return b"string"
    if kind is deque:
        return b"list"
    if kind is set:
        return b"set"
    return b"hash"


def value_size(value: Value) -> int:
    """Estimated bytes a value holds (its data plus a fixed cost per element)."""
    if type(value) is bytes:
        return len(value)
    if type(value) is int:
        return INT_SIZE
    if type(value) is dict:
        return sum(len(k) + len(v) + ELEMENT_OVERHEAD for k, v in value.items())
    items: deque[bytes] | set[bytes] = value  # type: ignore[assignment]
    return sum(len(item) + ELEMENT_OVERHEAD for item in items)


class Database:
    """One numbered database: ``data`` (key → value) and ``expires`` (key → ms timestamp)."""

    __slots__ = ("data", "expires", "index", "store")

    def __init__(self, store: Store, index: int) -> None:
        self.store = store
        self.index = index
        self.data: dict[bytes, Any] = {}
        self.expires: dict[bytes, int] = {}

    def get(self, key: bytes) -> Any:
        """The live value of ``key``, or None (an expired key is deleted on the way)."""
        value = self.data.get(key)
        if value is not None and self.expires:
            when = self.expires.get(key)
            if when is not None and self.store.now > when and not self.store.loading:
                self.expire_now(key)
                return None
        return value

    def expire_now(self, key: bytes) -> None:
        """Delete a key whose time has passed, and tell the expiry hook (the AOF logs a DEL)."""
        self.delete(key)
        hook = self.store.expired_hook
        if hook is not None:
            hook(self.index, key)

    def set(self, key: bytes, value: Value, keep_ttl: bool = False) -> None:
        """Store ``value`` under ``key``, dropping its TTL unless ``keep_ttl``."""
        store = self.store
        data = self.data
        old = data.get(key)
        size = len(value) if type(value) is bytes else value_size(value)
        if old is None:
            store.used += len(key) + KEY_OVERHEAD + size
        else:
            store.used += size - (len(old) if type(old) is bytes else value_size(old))
        data[key] = value
        store.dirty += 1
        if not keep_ttl and self.expires:
            self.expires.pop(key, None)
        if store.watchers:
            store.touch(self.index, key)
        if store.blocked_on and type(value) is deque and type(old) is not deque:
            store.ready.append((self.index, key))  # a list appeared where clients may wait for one

    def set_string(self, key: bytes, value: bytes) -> None:
        """SET's common case, ``set`` made shorter: store a string and drop the key's TTL."""
        data = self.data
        store = self.store
        old = data.get(key)
        if type(old) is bytes:
            store.used += len(value) - len(old)
        elif old is None:
            store.used += len(key) + KEY_OVERHEAD + len(value)
        else:
            store.used += len(value) - value_size(old)
        data[key] = value
        store.dirty += 1
        if self.expires:
            self.expires.pop(key, None)
        if store.watchers:
            store.touch(self.index, key)

    def delete(self, key: bytes) -> bool:
        """Remove ``key`` (live or expired); True if it was there."""
        old = self.data.pop(key, None)
        if old is None:
            return False
        store = self.store
        store.dirty += 1
        store.used -= len(key) + KEY_OVERHEAD + value_size(old)
        if self.expires:
            self.expires.pop(key, None)
        if store.watchers:
            store.touch(self.index, key)
        return True

    def grew(self, key: bytes, delta: int) -> None:
        """Account for a container value changed in place by ``delta`` bytes, and tell watchers."""
        store = self.store
        store.used += delta
        store.dirty += 1
        if store.watchers:
            store.touch(self.index, key)

    def ttl_ms(self, key: bytes) -> int | None:
        """The absolute expiry time of a live key, or None when it has none."""
        return self.expires.get(key)

    def set_expire(self, key: bytes, when: int) -> None:
        """Give an existing key the absolute expiry ``when`` (ms)."""
        self.expires[key] = when
        self.store.dirty += 1
        if self.store.watchers:
            self.store.touch(self.index, key)

    def persist(self, key: bytes) -> bool:
        """Drop the TTL of ``key``; True if it had one."""
        if self.expires.pop(key, None) is None:
            return False
        self.store.dirty += 1
        if self.store.watchers:
            self.store.touch(self.index, key)
        return True

    def flush(self) -> None:
        """Delete every key."""
        store = self.store
        if store.watchers:
            for key in list(self.data):
                store.touch(self.index, key)
        store.used -= sum(len(k) + KEY_OVERHEAD + value_size(v) for k, v in self.data.items())
        store.dirty += 1
        self.data = {}
        self.expires = {}

    def expire_sample(self, rng: random.Random) -> tuple[int, int]:
        """Check up to 20 random keys that have a TTL, delete the expired; return (checked, deleted)."""
        expires = self.expires
        if not expires:
            return 0, 0
        now = self.store.now
        keys = rng.sample(list(expires), _SAMPLE) if len(expires) > _SAMPLE else list(expires)
        deleted = 0
        for key in keys:
            if expires[key] < now:
                self.expire_now(key)
                deleted += 1
        return len(keys), deleted


class Store:
    """Every database, the clock commands read, byte accounting and the keys clients WATCH."""

    def __init__(self, databases: int = DATABASES, clock: Any = time.time) -> None:
        self.clock = clock
        self.now = int(clock() * 1000)
        self.used = 0  # estimated bytes held by keys and values
        self.dirty = 0  # changes made so far (Redis's server.dirty): a command that moved it wrote
        self.dbs = [Database(self, index) for index in range(databases)]
        #: (db index, key) → clients watching it; each is told by ``touch`` when the key changes.
        self.watchers: dict[tuple[int, bytes], set[Any]] = {}
        #: (db index, key) → clients blocked until a list is there, in the order they blocked
        #: (``kv/blocking.py``); ``ready`` holds the keys where one has appeared since.
        self.blocked_on: dict[tuple[int, bytes], deque[Any]] = {}
        self.ready: list[tuple[int, bytes]] = []
        self.config: dict[bytes, bytes] = {}
        #: Replaying an append-only file: no key expires (as in Redis), so replay gives back the same state.
        self.loading = False
        #: Called with (db index, key) for every key deleted because its time passed.
        self.expired_hook: Any = None
        self._rng = random.Random()
        self._next_sweep = 0.0

    def tick(self) -> None:
        """Read the clock once for the commands that follow (Redis's cached command time)."""
        self.now = int(self.clock() * 1000)

    def touch(self, index: int, key: bytes) -> None:
        """Tell the clients watching ``key`` in database ``index`` that it changed."""
        for client in self.watchers.get((index, key), ()):
            client.watch_dirty = True

    def active_expire(self, budget: float = 0.001, every: float = 0.1) -> int:
        """Sweep expired keys by sampling at most every ``every`` s for ``budget`` s; return deletions."""
        start = time.monotonic()
        if start < self._next_sweep or self.loading:
            return 0
        self._next_sweep = start + every
        deleted = 0
        for db in self.dbs:
            while db.expires:
                checked, gone = db.expire_sample(self._rng)
                deleted += gone
                if gone * 4 <= checked or time.monotonic() - start > budget:
                    break
        return deleted
