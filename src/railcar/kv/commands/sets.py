"""Set commands: SADD, SREM, SMEMBERS, SISMEMBER, SMISMEMBER, SCARD, SINTER, SUNION, SDIFF."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from railcar.kv import replies
from railcar.kv.store import ELEMENT_OVERHEAD
from railcar.kv.table import WRITE, command
from railcar.proto.resp import Error

if TYPE_CHECKING:
    from railcar.kv.client import Client


def _set(client: Client, key: bytes) -> Any:
    """The set at ``key``, None when missing, WRONGTYPE for another type."""
    value = client.db.get(key)
    if value is not None and type(value) is not set:
        return replies.WRONGTYPE
    return value


@command("sadd", -3, WRITE)
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
    if not members:
        client.db.delete(key)
    elif removed:
        client.db.grew(key, -sum(len(m) + ELEMENT_OVERHEAD for m in removed))
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
