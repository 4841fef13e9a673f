"""List commands: pushes, pops with a count, LRANGE, LLEN, LINDEX, LSET, LREM, LTRIM."""

from __future__ import annotations

import itertools
from collections import deque
from typing import TYPE_CHECKING, Any

from railcar.kv import replies
from railcar.kv.args import parse_int
from railcar.kv.store import ELEMENT_OVERHEAD
from railcar.kv.table import WRITE, command
from railcar.proto.resp import NULL_ARRAY, OK, Error

if TYPE_CHECKING:
    from railcar.kv.client import Client

_NOT_POSITIVE = Error("ERR value is out of range, must be positive")


def _list(client: Client, key: bytes) -> Any:
    """The list at ``key``, None when missing, WRONGTYPE for another type."""
    value = client.db.get(key)
    if value is not None and type(value) is not deque:
        return replies.WRONGTYPE
    return value


def _cost(items: Any) -> int:
    return sum(len(item) + ELEMENT_OVERHEAD for item in items)


def _push(client: Client, args: list[bytes], left: bool, only_existing: bool) -> Any:
    key = args[1]
    items = _list(client, key)
    if type(items) is Error:
        return items
    if items is None:
        if only_existing:
            return 0
        items = deque()
        client.db.set(key, items)
    if left:
        items.extendleft(args[2:])
    else:
        items.extend(args[2:])
    client.db.grew(key, _cost(args[2:]))
    return len(items)


@command("lpush", -3, WRITE)
def lpush(client: Client, args: list[bytes]) -> Any:
    """LPUSH key element [element ...]."""
    return _push(client, args, left=True, only_existing=False)


@command("rpush", -3, WRITE)
def rpush(client: Client, args: list[bytes]) -> Any:
    """RPUSH key element [element ...]."""
    return _push(client, args, left=False, only_existing=False)


@command("lpushx", -3, WRITE)
def lpushx(client: Client, args: list[bytes]) -> Any:
    """LPUSHX key element [element ...]."""
    return _push(client, args, left=True, only_existing=True)


@command("rpushx", -3, WRITE)
def rpushx(client: Client, args: list[bytes]) -> Any:
    """RPUSHX key element [element ...]."""
    return _push(client, args, left=False, only_existing=True)


def _pop(client: Client, args: list[bytes], left: bool) -> Any:
    if len(args) > 3:
        return replies.wrong_arity("lpop" if left else "rpop")
    count = None
    if len(args) == 3:
        count = parse_int(args[2])
        if count is None or count < 0:
            return _NOT_POSITIVE
    key = args[1]
    items = _list(client, key)
    if items is None:
        return None if count is None else NULL_ARRAY
    if type(items) is Error:
        return items
    if count == 0:
        return []
    pop = items.popleft if left else items.pop
    popped = [pop() for _ in range(min(count or 1, len(items)))]
    if items:
        client.db.grew(key, -_cost(popped))
    else:
        client.db.delete(key)
    return popped[0] if count is None else popped


@command("lpop", -2, WRITE)
def lpop(client: Client, args: list[bytes]) -> Any:
    """LPOP key [count]."""
    return _pop(client, args, left=True)


@command("rpop", -2, WRITE)
def rpop(client: Client, args: list[bytes]) -> Any:
    """RPOP key [count]."""
    return _pop(client, args, left=False)


def _span(start: int, end: int, size: int) -> tuple[int, int] | None:
    """Redis's clamping of a start..end (inclusive) range, None when it is empty."""
    if start < 0:
        start += size
    if end < 0:
        end += size
    start = max(start, 0)
    if start > end or start >= size:
        return None
    return start, min(end, size - 1)


@command("lrange", 4)
def lrange(client: Client, args: list[bytes]) -> Any:
    """LRANGE key start stop."""
    start, end = parse_int(args[2]), parse_int(args[3])
    if start is None or end is None:
        return replies.NOT_INTEGER
    items = _list(client, args[1])
    if items is None:
        return []
    if type(items) is Error:
        return items
    span = _span(start, end, len(items))
    if span is None:
        return []
    return list(itertools.islice(items, span[0], span[1] + 1))


@command("llen", 2)
def llen(client: Client, args: list[bytes]) -> Any:
    """LLEN key."""
    items = _list(client, args[1])
    if items is None:
        return 0
    return items if type(items) is Error else len(items)


@command("lindex", 3)
def lindex(client: Client, args: list[bytes]) -> Any:
    """LINDEX key index."""
    items = _list(client, args[1])
    if items is None or type(items) is Error:
        return items
    index = parse_int(args[2])
    if index is None:
        return replies.NOT_INTEGER
    if not -len(items) <= index < len(items):
        return None
    return items[index]


@command("lset", 4, WRITE)
def lset(client: Client, args: list[bytes]) -> Any:
    """LSET key index element."""
    items = _list(client, args[1])
    if items is None:
        return replies.NO_SUCH_KEY
    if type(items) is Error:
        return items
    index = parse_int(args[2])
    if index is None:
        return replies.NOT_INTEGER
    if not -len(items) <= index < len(items):
        return replies.INDEX_OUT_OF_RANGE
    old = items[index]
    items[index] = args[3]
    client.db.grew(args[1], len(args[3]) - len(old))
    return OK


@command("lrem", 4, WRITE)
def lrem(client: Client, args: list[bytes]) -> Any:
    """LREM key count element: from the head (count > 0), the tail (< 0), or all (0)."""
    count = parse_int(args[2])
    if count is None:
        return replies.NOT_INTEGER
    key, element = args[1], args[3]
    items = _list(client, key)
    if items is None:
        return 0
    if type(items) is Error:
        return items
    limit = abs(count) or len(items)
    ordered = reversed(items) if count < 0 else iter(items)
    kept: list[bytes] = []
    removed = 0
    for item in ordered:
        if removed < limit and item == element:
            removed += 1
        else:
            kept.append(item)
    if count < 0:
        kept.reverse()
    if not removed:
        return 0
    if kept:
        items.clear()
        items.extend(kept)
        client.db.grew(key, -removed * (len(element) + ELEMENT_OVERHEAD))
    else:
        client.db.delete(key)
    return removed


@command("ltrim", 4, WRITE)
def ltrim(client: Client, args: list[bytes]) -> Any:
    """LTRIM key start stop."""
    start, end = parse_int(args[2]), parse_int(args[3])
    if start is None or end is None:
        return replies.NOT_INTEGER
    key = args[1]
    items = _list(client, key)
    if items is None:
        return OK
    if type(items) is Error:
        return items
    span = _span(start, end, len(items))
    kept = [] if span is None else list(itertools.islice(items, span[0], span[1] + 1))
    if not kept:
        client.db.delete(key)
    elif len(kept) != len(items):
        before = _cost(items)
        items.clear()
        items.extend(kept)
        client.db.grew(key, _cost(kept) - before)
    return OK
