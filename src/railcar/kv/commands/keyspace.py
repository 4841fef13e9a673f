"""Keyspace commands: DEL, EXISTS, TYPE, KEYS, SCAN, RENAME, RANDOMKEY, DBSIZE, FLUSHDB, SELECT."""

from __future__ import annotations

import itertools
import random
from typing import TYPE_CHECKING, Any

from railcar.kv import replies
from railcar.kv.args import parse_cursor, parse_int
from railcar.kv.glob import match
from railcar.kv.store import type_name
from railcar.kv.table import DENYOOM, WRITE, command
from railcar.proto.resp import OK, Error, Simple

if TYPE_CHECKING:
    from railcar.kv.client import Client

_TYPES = {name: Simple(name.decode()) for name in (b"none", b"string", b"list", b"set", b"hash")}


@command("del", -2, WRITE)
def delete(client: Client, args: list[bytes]) -> Any:
    """DEL key [key ...]: how many existed."""
    db = client.db
    return sum(1 for key in args[1:] if db.get(key) is not None and db.delete(key))


@command("unlink", -2, WRITE)
def unlink(client: Client, args: list[bytes]) -> Any:
    """UNLINK key [key ...]: DEL (freeing is cheap here, so nothing is deferred)."""
    return delete(client, args)


@command("exists", -2)
def exists(client: Client, args: list[bytes]) -> Any:
    """EXISTS key [key ...]: a key named twice counts twice."""
    db = client.db
    return sum(1 for key in args[1:] if db.get(key) is not None)


@command("type", 2)
def type_(client: Client, args: list[bytes]) -> Any:
    """TYPE key."""
    value = client.db.get(args[1])
    return _TYPES[b"none" if value is None else type_name(value)]


def _live_keys(client: Client) -> list[bytes]:
    db = client.db
    now = client.server.store.now
    expires = db.expires
    return [key for key in db.data if not expires or expires.get(key, now) >= now]


@command("keys", 2)
def keys(client: Client, args: list[bytes]) -> Any:
    """KEYS pattern."""
    pattern = args[1]
    return [key for key in _live_keys(client) if match(pattern, key)]


@command("scan", -2)
def scan(client: Client, args: list[bytes]) -> Any:
    """SCAN cursor [MATCH pattern] [COUNT count] [TYPE type].

    The cursor is a position in the database's insertion order: every key present for the
    whole scan is returned (once) as long as no key before the cursor is deleted meanwhile.
    """
    cursor = parse_cursor(args[1])
    if cursor is None:
        return Error("ERR invalid cursor")
    pattern: bytes | None = None
    count = 10
    kind: bytes | None = None
    index = 2
    while index < len(args):
        option = args[index].lower()
        if index + 1 >= len(args):
            return replies.SYNTAX
        if option == b"count":
            parsed = parse_int(args[index + 1])
            if parsed is None:
                return replies.NOT_INTEGER
            if parsed < 1:
                return replies.SYNTAX
            count = parsed
        elif option == b"match":
            pattern = None if args[index + 1] == b"*" else args[index + 1]
        elif option == b"type":
            kind = args[index + 1].lower()
        else:
            return replies.SYNTAX
        index += 2
    db = client.db
    batch = list(itertools.islice(db.data, cursor, cursor + count))
    following = cursor + len(batch) if cursor + len(batch) < len(db.data) else 0
    found = []
    for key in batch:
        value = db.get(key)  # expires it if due
        if value is None:
            continue
        if pattern is not None and not match(pattern, key):
            continue
        if kind is not None and type_name(value) != kind:
            continue
        found.append(key)
    return [b"%d" % following, found]


def _rename(client: Client, args: list[bytes], nx: bool) -> Any:
    db = client.db
    source, target = args[1], args[2]
    value = db.get(source)
    if value is None:
        return replies.NO_SUCH_KEY
    if source == target:
        return 0 if nx else OK
    if nx and db.get(target) is not None:
        return 0
    when = db.ttl_ms(source)
    db.delete(source)
    db.set(target, value)
    if when is not None:
        db.set_expire(target, when)
    return 1 if nx else OK


@command("rename", 3, WRITE)
def rename(client: Client, args: list[bytes]) -> Any:
    """RENAME key newkey (the TTL goes along)."""
    return _rename(client, args, nx=False)


@command("renamenx", 3, WRITE)
def renamenx(client: Client, args: list[bytes]) -> Any:
    """RENAMENX key newkey."""
    return _rename(client, args, nx=True)


@command("randomkey", 1)
def randomkey(client: Client, args: list[bytes]) -> Any:
    """RANDOMKEY: a random live key, or nil."""
    db = client.db
    for _ in range(100):  # Redis also retries when it draws expired keys
        if not db.data:
            return None
        key = random.choice(list(db.data))
        if db.get(key) is not None:
            return key
    keys = _live_keys(client)
    return random.choice(keys) if keys else None


@command("dbsize", 1)
def dbsize(client: Client, args: list[bytes]) -> Any:
    """DBSIZE: keys held, counting expired ones not yet removed (as Redis does)."""
    return len(client.db.data)


def _flush_mode(args: list[bytes]) -> Error | None:
    if len(args) > 2 or (len(args) == 2 and args[1].lower() not in (b"async", b"sync")):
        return replies.SYNTAX
    return None


@command("flushdb", -1, WRITE)
def flushdb(client: Client, args: list[bytes]) -> Any:
    """FLUSHDB [ASYNC|SYNC]."""
    error = _flush_mode(args)
    if error is not None:
        return error
    client.db.flush()
    return OK


@command("flushall", -1, WRITE)
def flushall(client: Client, args: list[bytes]) -> Any:
    """FLUSHALL [ASYNC|SYNC]."""
    error = _flush_mode(args)
    if error is not None:
        return error
    for db in client.server.store.dbs:
        db.flush()
    return OK


@command("select", 2)
def select(client: Client, args: list[bytes]) -> Any:
    """SELECT index."""
    index = parse_int(args[1])
    if index is None:
        return replies.NOT_INTEGER
    if not -(2**31) <= index < 2**31:
        return replies.out_of_range(-(2**31), 2**31 - 1)
    dbs = client.server.store.dbs
    if not 0 <= index < len(dbs):
        return Error("ERR DB index is out of range")
    client.db = dbs[index]
    return OK


def _copy_value(value: Any) -> Any:
    """A value no later write to the original can change."""
    return value if type(value) is bytes or type(value) is int else type(value)(value)


@command("copy", -3, WRITE, DENYOOM)
def copy(client: Client, args: list[bytes]) -> Any:
    """COPY source destination [DB destination-db] [REPLACE]."""
    replace = False
    target_db = client.db
    index = 3
    while index < len(args):
        option = args[index].lower()
        if option == b"replace":
            replace = True
        elif option == b"db" and index + 1 < len(args):
            number = parse_int(args[index + 1])
            if number is None:
                return replies.NOT_INTEGER
            if not -(2**31) <= number < 2**31:
                return replies.out_of_range(-(2**31), 2**31 - 1)
            dbs = client.server.store.dbs
            if not 0 <= number < len(dbs):
                return Error("ERR DB index is out of range")
            target_db = dbs[number]
            index += 1
        else:
            return replies.SYNTAX
        index += 1
    source, target = args[1], args[2]
    if target_db is client.db and source == target:
        return Error("ERR source and destination objects are the same")
    value = client.db.get(source)
    if value is None:
        return 0
    when = client.db.ttl_ms(source)
    if target_db.get(target) is not None:
        if not replace:
            return 0
        target_db.delete(target)
    target_db.set(target, _copy_value(value))
    if when is not None:
        target_db.set_expire(target, when)
    return 1
