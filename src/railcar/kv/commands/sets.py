"""Set commands: SADD, SREM, SMEMBERS, SISMEMBER, SMISMEMBER, SCARD, SINTER, SUNION, SDIFF."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from railcar.kv import replies
from railcar.kv.args import parse_cursor, parse_int
from railcar.kv.glob import match
from railcar.kv.store import ELEMENT_OVERHEAD
from railcar.kv.table import DENYOOM, WRITE, command
from railcar.proto.resp import Error

if TYPE_CHECKING:
    from railcar.kv.client import Client


def _set(client: Client, key: bytes) -> Any:
    """The set at ``key``, None when missing, WRONGTYPE for another type."""
    value = client.db.get(key)
    if value is not None and type(value) is not set:
        return replies.WRONGTYPE
    return value


@command("sadd", -3, WRITE, DENYOOM)
def sadd(client: Client, args: list[bytes]) -> Any:
    """SADD key member [member ...]: how many were new."""
    key = args[1]
    members = _set(client, key)
    if type(members) is Error:
        return members
    if members is None:
        members = set()
        client.db.set(key, members)
    before = len(members)
    delta = 0
    for member in args[2:]:
        if member not in members:
            members.add(member)
            delta += len(member) + ELEMENT_OVERHEAD
    client.db.grew(key, delta)
    return len(members) - before


@command("srem", -3, WRITE)
def srem(client: Client, args: list[bytes]) -> Any:
    """SREM key member [member ...]."""
    key = args[1]
    members = _set(client, key)
    if members is None:
        return 0
    if type(members) is Error:
        return members
    removed = [member for member in set(args[2:]) if member in members]
    members.difference_update(removed)
    if removed:  # before a delete, which counts only what is left
        client.db.grew(key, -sum(len(m) + ELEMENT_OVERHEAD for m in removed))
    if not members:
        client.db.delete(key)
    return len(removed)


@command("smembers", 2)
def smembers(client: Client, args: list[bytes]) -> Any:
    """SMEMBERS key: a set in RESP3, an array in RESP2."""
    members = _set(client, args[1])
    if type(members) is Error:
        return members
    return set(members or ())


@command("sismember", 3)
def sismember(client: Client, args: list[bytes]) -> Any:
    """SISMEMBER key member."""
    members = _set(client, args[1])
    if type(members) is Error:
        return members
    return int(bool(members) and args[2] in members)


@command("smismember", -3)
def smismember(client: Client, args: list[bytes]) -> Any:
    """SMISMEMBER key member [member ...]."""
    members = _set(client, args[1])
    if type(members) is Error:
        return members
    members = members or set()
    return [int(member in members) for member in args[2:]]


@command("scard", 2)
def scard(client: Client, args: list[bytes]) -> Any:
    """SCARD key."""
    members = _set(client, args[1])
    if type(members) is Error:
        return members
    return len(members or ())


def _sets(client: Client, keys: list[bytes]) -> list[set[bytes] | None] | Error:
    """The sets at ``keys`` (None for missing ones), or WRONGTYPE if any holds another type."""
    found = []
    for key in keys:
        members = _set(client, key)
        if type(members) is Error:
            return members
        found.append(members)
    return found


@command("sinter", -2)
def sinter(client: Client, args: list[bytes]) -> Any:
    """SINTER key [key ...]."""
    found = _sets(client, args[1:])
    if type(found) is Error:
        return found
    if any(members is None for members in found):  # type: ignore[union-attr]
        return set()
    first, *rest = found  # type: ignore[misc]
    return set(first or ()).intersection(*rest)


@command("sunion", -2)
def sunion(client: Client, args: list[bytes]) -> Any:
    """SUNION key [key ...]."""
    found = _sets(client, args[1:])
    if type(found) is Error:
        return found
    return set().union(*(members for members in found if members))  # type: ignore[union-attr]


@command("sdiff", -2)
def sdiff(client: Client, args: list[bytes]) -> Any:
    """SDIFF key [key ...]: members of the first set in none of the others."""
    found = _sets(client, args[1:])
    if type(found) is Error:
        return found
    first, *rest = found  # type: ignore[misc]
    return set(first or ()).difference(*(members for members in rest if members))


def _count(raw: bytes, message: str) -> int | Error:
    value = parse_int(raw)
    if value is None or value < 0:
        return Error(f"ERR {message}")
    return value


@command("spop", -2, WRITE)
def spop(client: Client, args: list[bytes]) -> Any:
    """SPOP key [count]: random members, removed."""
    if len(args) > 3:
        return replies.wrong_arity("spop")
    count = None
    if len(args) == 3:
        parsed = _count(args[2], "value is out of range, must be positive")
        if isinstance(parsed, Error):
            return parsed
        count = parsed
    key = args[1]
    members = _set(client, key)
    if type(members) is Error:
        return members
    if not members:
        return None if count is None else set()
    chosen = random.sample(list(members), min(count if count is not None else 1, len(members)))
    members.difference_update(chosen)
    client.rewrite = [[b"SREM", key, *chosen]]  # the draw is random: replay what it drew
    client.db.grew(key, -sum(len(m) + ELEMENT_OVERHEAD for m in chosen))  # before a delete
    if not members:
        client.db.delete(key)
    return chosen[0] if count is None else set(chosen)


@command("srandmember", -2)
def srandmember(client: Client, args: list[bytes]) -> Any:
    """SRANDMEMBER key [count]: distinct members for a positive count, repeats for a negative one."""
    if len(args) > 3:
        return replies.wrong_arity("srandmember")
    count = None
    if len(args) == 3:
        count = parse_int(args[2])
        if count is None:
            return replies.NOT_INTEGER
    members = _set(client, args[1])
    if type(members) is Error:
        return members
    if not members:
        return None if count is None else []
    pool = list(members)
    if count is None:
        return random.choice(pool)
    if count >= 0:
        return random.sample(pool, min(count, len(pool)))
    return [random.choice(pool) for _ in range(-count)]


@command("smove", 4, WRITE)
def smove(client: Client, args: list[bytes]) -> Any:
    """SMOVE source destination member."""
    source, target, member = args[1], args[2], args[3]
    from_set = _set(client, source)
    if from_set is None:
        return 0
    to_set = _set(client, target)
    if type(from_set) is Error:
        return from_set
    if type(to_set) is Error:
        return to_set
    if source == target:
        return int(member in from_set)
    if member not in from_set:
        return 0
    from_set.discard(member)
    cost = len(member) + ELEMENT_OVERHEAD
    client.db.grew(source, -cost)  # before a delete, which counts only what is left
    if not from_set:
        client.db.delete(source)
    if to_set is None:
        to_set = set()
        client.db.set(target, to_set)
    if member not in to_set:
        to_set.add(member)
        client.db.grew(target, cost)
    return 1


def _store(client: Client, target: bytes, result: Any) -> Any:
    if type(result) is Error:
        return result
    client.db.delete(target)
    if result:
        client.db.set(target, set(result))
    return len(result)


@command("sinterstore", -3, WRITE, DENYOOM)
def sinterstore(client: Client, args: list[bytes]) -> Any:
    """SINTERSTORE destination key [key ...]."""
    return _store(client, args[1], sinter(client, args[1:]))


@command("sunionstore", -3, WRITE, DENYOOM)
def sunionstore(client: Client, args: list[bytes]) -> Any:
    """SUNIONSTORE destination key [key ...]."""
    return _store(client, args[1], sunion(client, args[1:]))


@command("sdiffstore", -3, WRITE, DENYOOM)
def sdiffstore(client: Client, args: list[bytes]) -> Any:
    """SDIFFSTORE destination key [key ...]."""
    return _store(client, args[1], sdiff(client, args[1:]))


@command("sintercard", -3)
def sintercard(client: Client, args: list[bytes]) -> Any:
    """SINTERCARD numkeys key [key ...] [LIMIT limit]."""
    numkeys = parse_int(args[1])
    if numkeys is None or numkeys < 1:
        return Error("ERR numkeys should be greater than 0")
    if numkeys > len(args) - 2:
        return Error("ERR Number of keys can't be greater than number of args")
    limit = 0
    index = 2 + numkeys
    while index < len(args):
        if args[index].lower() == b"limit" and index + 1 < len(args):
            parsed = _count(args[index + 1], "LIMIT can't be negative")
            if isinstance(parsed, Error):
                return parsed
            limit = parsed
            index += 2
        else:
            return replies.SYNTAX
    found = sinter(client, [b"sinter", *args[2 : 2 + numkeys]])
    if type(found) is Error:
        return found
    return min(len(found), limit) if limit else len(found)


@command("sscan", -3)
def sscan(client: Client, args: list[bytes]) -> Any:
    """SSCAN key cursor [MATCH pattern] [COUNT count]: every member at once, as Redis does for small sets."""
    if parse_cursor(args[2]) is None:
        return Error("ERR invalid cursor")
    members = _set(client, args[1])
    if members is None:
        return [b"0", []]
    if type(members) is Error:
        return members
    pattern = scan_options(args, 3)
    if isinstance(pattern, Error):
        return pattern
    return [b"0", [m for m in members if pattern is None or match(pattern, m)]]


def scan_options(args: list[bytes], start: int) -> bytes | Error | None:
    """The MATCH pattern of xSCAN options (None: everything), checking COUNT; or the error."""
    pattern: bytes | None = None
    index = start
    while index < len(args):
        option = args[index].lower()
        if index + 1 >= len(args):
            return replies.SYNTAX
        if option == b"count":
            count = parse_int(args[index + 1])
            if count is None:
                return replies.NOT_INTEGER
            if count < 1:
                return replies.SYNTAX
        elif option == b"match":
            pattern = None if args[index + 1] == b"*" else args[index + 1]
        else:
            return replies.SYNTAX
        index += 2
    return pattern
