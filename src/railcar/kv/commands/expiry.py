"""Expiry commands: EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT, TTL/PTTL, EXPIRETIME/PEXPIRETIME, PERSIST."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from railcar.kv import replies
from railcar.kv.args import parse_int
from railcar.kv.table import WRITE, command
from railcar.proto.resp import Error

if TYPE_CHECKING:
    from railcar.kv.client import Client

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_NX, _XX, _GT, _LT = 1, 2, 4, 8
_OPTIONS: Final = {b"nx": _NX, b"xx": _XX, b"gt": _GT, b"lt": _LT}


def _expire(client: Client, args: list[bytes], name: str, seconds: bool, absolute: bool) -> Any:
    flags = 0
    for option in args[3:]:
        flag = _OPTIONS.get(option.lower())
        if flag is None:
            text = option.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            return Error(f"ERR Unsupported option {text}")
        flags |= flag
    if flags & _NX and flags & (_XX | _GT | _LT):
        return Error("ERR NX and XX, GT or LT options at the same time are not compatible")
    if flags & _GT and flags & _LT:
        return Error("ERR GT and LT options at the same time are not compatible")
    when = parse_int(args[2])
    if when is None:
        return replies.NOT_INTEGER
    if seconds:
        if not _INT64_MIN // 1000 <= when <= _INT64_MAX // 1000:
            return replies.invalid_expire(name)
        when *= 1000
    now = client.server.store.now
    if not absolute:
        if when > _INT64_MAX - now:
            return replies.invalid_expire(name)
        when += now
    db = client.db
    key = args[1]
    if db.get(key) is None:
        return 0
    if flags:
        current = db.ttl_ms(key)
        if flags & _NX and current is not None:
            return 0
        if flags & _XX and current is None:
            return 0
        if flags & _GT and (current is None or when <= current):
            return 0
        if flags & _LT and current is not None and when >= current:
            return 0
    if when <= now and not client.server.store.loading:  # a time already past deletes (not on replay)
        db.delete(key)
        client.rewrite = [[b"DEL", key]]
    else:
        db.set_expire(key, when)
        client.rewrite = [[b"PEXPIREAT", key, b"%d" % when]]  # relative times replay wrong
    return 1


@command("expire", -3, WRITE)
def expire(client: Client, args: list[bytes]) -> Any:
    """EXPIRE key seconds [NX|XX|GT|LT]."""
    return _expire(client, args, "expire", seconds=True, absolute=False)


@command("pexpire", -3, WRITE)
def pexpire(client: Client, args: list[bytes]) -> Any:
    """PEXPIRE key milliseconds [NX|XX|GT|LT]."""
    return _expire(client, args, "pexpire", seconds=False, absolute=False)


@command("expireat", -3, WRITE)
def expireat(client: Client, args: list[bytes]) -> Any:
    """EXPIREAT key unix-seconds [NX|XX|GT|LT]."""
    return _expire(client, args, "expireat", seconds=True, absolute=True)


@command("pexpireat", -3, WRITE)
def pexpireat(client: Client, args: list[bytes]) -> Any:
    """PEXPIREAT key unix-milliseconds [NX|XX|GT|LT]."""
    return _expire(client, args, "pexpireat", seconds=False, absolute=True)


def _remaining(client: Client, key: bytes) -> int | None:
    """-2 missing, -1 no TTL, else the ms left (never negative); None never happens."""
    db = client.db
    if db.get(key) is None:
        return -2
    when = db.ttl_ms(key)
    if when is None:
        return -1
    return max(when - client.server.store.now, 0)


@command("ttl", 2)
def ttl(client: Client, args: list[bytes]) -> Any:
    """TTL key: seconds left, rounded."""
    left = _remaining(client, args[1])
    return left if left is None or left < 0 else (left + 500) // 1000


@command("pttl", 2)
def pttl(client: Client, args: list[bytes]) -> Any:
    """PTTL key: milliseconds left."""
    return _remaining(client, args[1])


def _expiretime(client: Client, key: bytes, seconds: bool) -> Any:
    db = client.db
    if db.get(key) is None:
        return -2
    when = db.ttl_ms(key)
    if when is None:
        return -1
    return (when + 500) // 1000 if seconds else when


@command("expiretime", 2)
def expiretime(client: Client, args: list[bytes]) -> Any:
    """EXPIRETIME key: the absolute expiry in unix seconds."""
    return _expiretime(client, args[1], seconds=True)


@command("pexpiretime", 2)
def pexpiretime(client: Client, args: list[bytes]) -> Any:
    """PEXPIRETIME key: the absolute expiry in unix milliseconds."""
    return _expiretime(client, args[1], seconds=False)


@command("persist", 2, WRITE)
def persist(client: Client, args: list[bytes]) -> Any:
    """PERSIST key: 1 if a TTL was removed."""
    db = client.db
    if db.get(args[1]) is None:
        return 0
    return 1 if db.persist(args[1]) else 0
