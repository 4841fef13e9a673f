"""Hash commands: HSET, HGET, HMGET, HGETALL, HDEL, HEXISTS, HLEN, HKEYS, HVALS, HINCRBY, ..."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from railcar.kv import replies
from railcar.kv.args import format_long_double, parse_cursor, parse_int, parse_long_double
from railcar.kv.glob import match
from railcar.kv.store import ELEMENT_OVERHEAD
from railcar.kv.table import DENYOOM, WRITE, command
from railcar.proto.resp import OK, Error

if TYPE_CHECKING:
    from railcar.kv.client import Client


def _hash(client: Client, key: bytes) -> Any:
    """The hash at ``key``, None when missing, WRONGTYPE for another type."""
    value = client.db.get(key)
    if value is not None and type(value) is not dict:
        return replies.WRONGTYPE
    return value


def _hash_for_write(client: Client, key: bytes) -> Any:
    fields = _hash(client, key)
    if fields is None:
        fields = {}
        client.db.set(key, fields)
    return fields


def _set_fields(client: Client, args: list[bytes], name: str) -> Any:
    if len(args) % 2:
        return replies.wrong_arity(name)
    key = args[1]
    fields = _hash_for_write(client, key)
    if type(fields) is Error:
        return fields
    added = 0
    delta = 0
    for index in range(2, len(args), 2):
        field, value = args[index], args[index + 1]
        old = fields.get(field)
        if old is None:
            added += 1
            delta += len(field) + len(value) + ELEMENT_OVERHEAD
        else:
            delta += len(value) - len(old)
        fields[field] = value
    client.db.grew(key, delta)
    return added


@command("hset", -4, WRITE, DENYOOM)
def hset(client: Client, args: list[bytes]) -> Any:
    """HSET key field value [field value ...]: how many fields were new."""
    return _set_fields(client, args, "hset")


@command("hmset", -4, WRITE, DENYOOM)
def hmset(client: Client, args: list[bytes]) -> Any:
    """HMSET key field value [field value ...]: OK."""
    result = _set_fields(client, args, "hmset")
    return result if type(result) is Error else OK


@command("hsetnx", 4, WRITE, DENYOOM)
def hsetnx(client: Client, args: list[bytes]) -> Any:
    """HSETNX key field value."""
    fields = _hash(client, args[1])
    if type(fields) is Error:
        return fields
    if fields is not None and args[2] in fields:
        return 0
    return _set_fields(client, args, "hsetnx")


@command("hget", 3)
def hget(client: Client, args: list[bytes]) -> Any:
    """HGET key field."""
    fields = _hash(client, args[1])
    if fields is None or type(fields) is Error:
        return fields
    return fields.get(args[2])


@command("hmget", -3)
def hmget(client: Client, args: list[bytes]) -> Any:
    """HMGET key field [field ...]."""
    fields = _hash(client, args[1])
    if type(fields) is Error:
        return fields
    fields = fields or {}
    return [fields.get(field) for field in args[2:]]


@command("hgetall", 2)
def hgetall(client: Client, args: list[bytes]) -> Any:
    """HGETALL key: a map in RESP3, field and value after each other in RESP2."""
    fields = _hash(client, args[1])
    if type(fields) is Error:
        return fields
    return dict(fields or {})


@command("hdel", -3, WRITE)
def hdel(client: Client, args: list[bytes]) -> Any:
    """HDEL key field [field ...]."""
    key = args[1]
    fields = _hash(client, key)
    if fields is None:
        return 0
    if type(fields) is Error:
        return fields
    removed = 0
    delta = 0
    for field in args[2:]:
        value = fields.pop(field, None)
        if value is not None:
            removed += 1
            delta -= len(field) + len(value) + ELEMENT_OVERHEAD
    if removed:  # before a delete, which counts only what is left
        client.db.grew(key, delta)
    if not fields:
        client.db.delete(key)
    return removed


@command("hexists", 3)
def hexists(client: Client, args: list[bytes]) -> Any:
    """HEXISTS key field."""
    fields = _hash(client, args[1])
    if type(fields) is Error:
        return fields
    return int(bool(fields) and args[2] in fields)


@command("hlen", 2)
def hlen(client: Client, args: list[bytes]) -> Any:
    """HLEN key."""
    fields = _hash(client, args[1])
    if type(fields) is Error:
        return fields
    return len(fields or ())


@command("hstrlen", 3)
def hstrlen(client: Client, args: list[bytes]) -> Any:
    """HSTRLEN key field."""
    fields = _hash(client, args[1])
    if type(fields) is Error:
        return fields
    return len((fields or {}).get(args[2], b""))


@command("hkeys", 2)
def hkeys(client: Client, args: list[bytes]) -> Any:
    """HKEYS key."""
    fields = _hash(client, args[1])
    if type(fields) is Error:
        return fields
    return list(fields or ())


@command("hvals", 2)
def hvals(client: Client, args: list[bytes]) -> Any:
    """HVALS key."""
    fields = _hash(client, args[1])
    if type(fields) is Error:
        return fields
    return list((fields or {}).values())


@command("hincrby", 4, WRITE, DENYOOM)
def hincrby(client: Client, args: list[bytes]) -> Any:
    """HINCRBY key field increment."""
    by = parse_int(args[3])
    if by is None:
        return replies.NOT_INTEGER
    key, field = args[1], args[2]
    fields = _hash_for_write(client, key)
    if type(fields) is Error:
        return fields
    old = fields.get(field)
    current = 0 if old is None else parse_int(old)
    if current is None:
        if not fields:
            client.db.delete(key)
        return Error("ERR hash value is not an integer")
    result = current + by
    if not -(2**63) <= result < 2**63:
        if not fields:
            client.db.delete(key)
        return replies.OVERFLOW
    return _store_field(client, key, fields, field, b"%d" % result, result)


def _store_field(
    client: Client, key: bytes, fields: dict[bytes, bytes], field: bytes, raw: bytes, reply: Any
) -> Any:
    old = fields.get(field)
    fields[field] = raw
    client.db.grew(key, len(raw) - (len(old) if old is not None else -len(field) - ELEMENT_OVERHEAD))
    return reply


@command("hincrbyfloat", 4, WRITE, DENYOOM)
def hincrbyfloat(client: Client, args: list[bytes]) -> Any:
    """HINCRBYFLOAT key field increment."""
    by = parse_long_double(args[3])
    if by is None:
        return replies.NOT_FLOAT
    if not by.__abs__() < float("inf"):
        return Error("ERR value is NaN or Infinity")
    key, field = args[1], args[2]
    fields = _hash_for_write(client, key)
    if type(fields) is Error:
        return fields
    old = fields.get(field)
    current = parse_long_double(b"0" if old is None else old)
    if current is None:
        if not fields:
            client.db.delete(key)
        return Error("ERR hash value is not a float")
    result = current + by
    if not result.__abs__() < float("inf"):
        if not fields:
            client.db.delete(key)
        return Error("ERR increment would produce NaN or Infinity")
    text = format_long_double(result)
    return _store_field(client, key, fields, field, text, text)


@command("hscan", -3)
def hscan(client: Client, args: list[bytes]) -> Any:
    """HSCAN key cursor [MATCH pattern] [COUNT count]: every field at once, as Redis does for small hashes."""
    from railcar.kv.commands.sets import scan_options  # noqa: PLC0415 - shared with SSCAN

    if parse_cursor(args[2]) is None:
        return Error("ERR invalid cursor")
    fields = _hash(client, args[1])
    if fields is None:
        return [b"0", []]
    if type(fields) is Error:
        return fields
    pattern = scan_options(args, 3)
    if isinstance(pattern, Error):
        return pattern
    flat = [
        item
        for field, value in fields.items()
        if pattern is None or match(pattern, field)
        for item in (field, value)
    ]
    return [b"0", flat]


@command("hrandfield", -2)
def hrandfield(client: Client, args: list[bytes]) -> Any:
    """HRANDFIELD key [count [WITHVALUES]]."""
    if len(args) > 4 or (len(args) == 4 and args[3].lower() != b"withvalues"):
        return replies.SYNTAX
    count = None
    if len(args) >= 3:
        count = parse_int(args[2])
        if count is None:
            return replies.NOT_INTEGER
    fields = _hash(client, args[1])
    if type(fields) is Error:
        return fields
    if not fields:
        return None if count is None else []
    pool = list(fields)
    if count is None:
        return random.choice(pool)
    chosen = (
        random.sample(pool, min(count, len(pool)))
        if count >= 0
        else [random.choice(pool) for _ in range(-count)]
    )
    if len(args) == 4:
        return [item for field in chosen for item in (field, fields[field])]
    return chosen
