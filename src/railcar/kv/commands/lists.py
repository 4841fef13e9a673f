"""List commands: pushes, pops with a count, LRANGE, LLEN, LINDEX, LSET, LREM, LTRIM."""

from __future__ import annotations

import itertools
from collections import deque
from typing import TYPE_CHECKING, Any

from railcar.kv import replies
from railcar.kv.args import parse_int
from railcar.kv.store import ELEMENT_OVERHEAD
from railcar.kv.table import DENYOOM, WRITE, command
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


def _live(client: Client, key: bytes) -> Any:
    """The value at ``key`` with a dict lookup only when no key of the database has a TTL."""
    db = client.db
    return db.data.get(key) if not db.expires else db.get(key)


@command("lpush", -3, WRITE, DENYOOM)
def lpush(client: Client, args: list[bytes]) -> Any:
    """LPUSH key element [element ...]."""
    if len(args) == 3:  # one element onto an existing list, the common case made short
        items = _live(client, args[1])
        if type(items) is deque:
            items.appendleft(args[2])
            client.db.grew(args[1], len(args[2]) + ELEMENT_OVERHEAD)
            return len(items)
    return _push(client, args, left=True, only_existing=False)


@command("rpush", -3, WRITE, DENYOOM)
def rpush(client: Client, args: list[bytes]) -> Any:
    """RPUSH key element [element ...]."""
    if len(args) == 3:
        items = _live(client, args[1])
        if type(items) is deque:
            items.append(args[2])
            client.db.grew(args[1], len(args[2]) + ELEMENT_OVERHEAD)
            return len(items)
    return _push(client, args, left=False, only_existing=False)


@command("lpushx", -3, WRITE, DENYOOM)
def lpushx(client: Client, args: list[bytes]) -> Any:
    """LPUSHX key element [element ...]."""
    return _push(client, args, left=True, only_existing=True)


@command("rpushx", -3, WRITE, DENYOOM)
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
    client.db.grew(key, -_cost(popped))  # before a delete, which counts only what is left
    if not items:
        client.db.delete(key)
    return popped[0] if count is None else popped


@command("lpop", -2, WRITE)
def lpop(client: Client, args: list[bytes]) -> Any:
    """LPOP key [count]."""
    if len(args) == 2:  # one element off a list that keeps some (an emptied list is deleted)
        items = _live(client, args[1])
        if type(items) is deque and len(items) > 1:
            item: bytes = items.popleft()
            client.db.grew(args[1], -len(item) - ELEMENT_OVERHEAD)
            return item
    return _pop(client, args, left=True)


@command("rpop", -2, WRITE)
def rpop(client: Client, args: list[bytes]) -> Any:
    """RPOP key [count]."""
    if len(args) == 2:
        items = _live(client, args[1])
        if type(items) is deque and len(items) > 1:
            item: bytes = items.pop()
            client.db.grew(args[1], -len(item) - ELEMENT_OVERHEAD)
            return item
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


@command("lset", 4, WRITE, DENYOOM)
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


@command("linsert", 5, WRITE, DENYOOM)
def linsert(client: Client, args: list[bytes]) -> Any:
    """LINSERT key BEFORE|AFTER pivot element: the new length, -1 without the pivot."""
    where = args[2].lower()
    if where not in (b"before", b"after"):
        return replies.SYNTAX
    key = args[1]
    items = _list(client, key)
    if items is None:
        return 0
    if type(items) is Error:
        return items
    try:
        index = items.index(args[3])
    except ValueError:
        return -1
    items.insert(index + (where == b"after"), args[4])
    client.db.grew(key, len(args[4]) + ELEMENT_OVERHEAD)
    return len(items)


def _positive(raw: bytes, message: str) -> int | Error:
    value = parse_int(raw)
    if value is None or value < 0:
        return Error(f"ERR {message}")
    return value


@command("lpos", -3)
def lpos(client: Client, args: list[bytes]) -> Any:
    """LPOS key element [RANK rank] [COUNT num-matches] [MAXLEN len]."""
    rank, count, maxlen = 1, None, 0
    index = 3
    while index < len(args):
        option = args[index].lower()
        if index + 1 >= len(args) or option not in (b"rank", b"count", b"maxlen"):
            return replies.SYNTAX
        index += 1
        if option == b"rank":
            parsed = parse_int(args[index])
            if parsed is None:
                return replies.NOT_INTEGER
            if parsed == 0:
                return Error(
                    "ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... "
                    "or use negative to start from the end of the list"
                )
            rank = parsed
        else:
            message = "COUNT can't be negative" if option == b"count" else "MAXLEN can't be negative"
            value = _positive(args[index], message)
            if isinstance(value, Error):
                return value
            if option == b"count":
                count = value
            else:
                maxlen = value
        index += 1
    items = _list(client, args[1])
    if items is None:
        return None if count is None else []
    if type(items) is Error:
        return items
    size = len(items)
    order = range(size) if rank > 0 else range(size - 1, -1, -1)
    element = args[2]
    found: list[int] = []
    matches = 0
    for checked, position in enumerate(order):
        if maxlen and checked >= maxlen:
            break
        if items[position] == element:
            matches += 1
            if matches >= abs(rank):
                found.append(position)
                if count is None or (count and len(found) >= count):
                    break
    if count is None:
        return found[0] if found else None
    return found


def _end(raw: bytes) -> bool | None:
    """LEFT → True, RIGHT → False, anything else None."""
    side = raw.lower()
    return True if side == b"left" else False if side == b"right" else None


def _move(client: Client, source: bytes, target: bytes, from_left: bool, to_left: bool) -> Any:
    items = _list(client, source)
    if items is None or type(items) is Error:
        return items
    destination = _list(client, target)
    if type(destination) is Error:
        return destination
    value = items.popleft() if from_left else items.pop()
    cost = len(value) + ELEMENT_OVERHEAD
    client.db.grew(source, -cost)  # before a delete, which counts only what is left
    if not items and source != target:
        client.db.delete(source)
    if source == target:
        destination = items
    elif destination is None:
        destination = deque()
        client.db.set(target, destination)
    if to_left:
        destination.appendleft(value)
    else:
        destination.append(value)
    client.db.grew(target, cost)
    return value


@command("lmove", 5, WRITE, DENYOOM)
def lmove(client: Client, args: list[bytes]) -> Any:
    """LMOVE source destination LEFT|RIGHT LEFT|RIGHT."""
    from_left, to_left = _end(args[3]), _end(args[4])
    if from_left is None or to_left is None:
        return replies.SYNTAX
    return _move(client, args[1], args[2], from_left, to_left)


@command("rpoplpush", 3, WRITE, DENYOOM)
def rpoplpush(client: Client, args: list[bytes]) -> Any:
    """RPOPLPUSH source destination."""
    return _move(client, args[1], args[2], from_left=False, to_left=True)
