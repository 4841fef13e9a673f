"""The string commands, with Redis 7.0's options, replies and errors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from railcar.kv import replies
from railcar.kv.args import format_long_double, parse_int, parse_long_double
from railcar.kv.store import string_bytes
from railcar.kv.table import DENYOOM, WRITE, command
from railcar.proto.resp import MAX_BULK, OK, Error

if TYPE_CHECKING:
    from railcar.kv.client import Client

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1

# Flags of parseExtendedStringArgumentsOrReply.
_NX, _XX, _GET, _KEEPTTL, _PERSIST, _EX, _PX, _EXAT, _PXAT = (1 << i for i in range(9))
_EXPIRES: Final = _EX | _PX | _EXAT | _PXAT
_FOR_SET, _FOR_GETEX = 0, 1


def _parse_options(args: list[bytes], start: int, kind: int) -> tuple[int, bytes | None] | Error:
    """SET's and GETEX's options: (flags, expire argument) or the syntax error."""
    flags = 0
    expire: bytes | None = None
    index = start
    count = len(args)
    while index < count:
        option = args[index].lower()
        has_next = index + 1 < count
        if option == b"nx" and not flags & _XX and kind == _FOR_SET:
            flags |= _NX
        elif option == b"xx" and not flags & _NX and kind == _FOR_SET:
            flags |= _XX
        elif option == b"get" and kind == _FOR_SET:
            flags |= _GET
        elif option == b"keepttl" and not flags & (_PERSIST | _EXPIRES) and kind == _FOR_SET:
            flags |= _KEEPTTL
        elif option == b"persist" and not flags & (_KEEPTTL | _EXPIRES) and kind == _FOR_GETEX:
            flags |= _PERSIST
        elif (
            option in _UNITS and has_next and not flags & (_KEEPTTL | _PERSIST | (_EXPIRES & ~_UNITS[option]))
        ):
            flags |= _UNITS[option]
            expire = args[index + 1]
            index += 1
        else:
            return replies.SYNTAX
        index += 1
    return flags, expire


_UNITS: Final = {b"ex": _EX, b"px": _PX, b"exat": _EXAT, b"pxat": _PXAT}


def expire_at_ms(client: Client, raw: bytes, flags: int, name: str) -> int | Error:
    """An EX/PX/EXAT/PXAT argument as an absolute time in ms, or Redis's error for it."""
    value = parse_int(raw)
    if value is None:
        return replies.NOT_INTEGER
    seconds = bool(flags & (_EX | _EXAT))
    if value <= 0 or (seconds and value > _INT64_MAX // 1000):
        return replies.invalid_expire(name)
    if seconds:
        value *= 1000
    if flags & (_EX | _PX):
        value += client.server.store.now
    if value > _INT64_MAX:
        return replies.invalid_expire(name)
    return value


def _string(client: Client, key: bytes) -> Any:
    """The string at ``key`` as bytes, None when missing, WRONGTYPE for another type."""
    value = client.db.get(key)
    if value is None or type(value) is bytes:
        return value
    text = string_bytes(value)
    return replies.WRONGTYPE if text is None else text


@command("get", 2)
def get(client: Client, args: list[bytes]) -> Any:
    """GET key."""
    db = client.db
    value = db.data.get(args[1])
    if value is not None and db.expires:
        value = db.get(args[1])  # the lookup that expires
    if value is None or type(value) is bytes:
        return value
    text = string_bytes(value)
    return replies.WRONGTYPE if text is None else text


@command("set", -3, WRITE, DENYOOM)
def set_(client: Client, args: list[bytes]) -> Any:
    """SET key value [NX|XX] [GET] [EX s|PX ms|EXAT ts|PXAT ms|KEEPTTL]."""
    if len(args) == 3:  # the common case, without the option parsing
        client.db.set_string(args[1], args[2])
        return OK
    parsed = _parse_options(args, 3, _FOR_SET)
    if type(parsed) is Error:
        return parsed
    flags, expire = parsed  # type: ignore[misc]
    return _set(client, args[1], args[2], flags, expire, "set")


def _set(client: Client, key: bytes, value: bytes, flags: int, expire: bytes | None, name: str) -> Any:
    when: int | None = None
    if expire is not None:
        parsed = expire_at_ms(client, expire, flags, name)
        if isinstance(parsed, Error):
            return parsed
        when = parsed
    db = client.db
    old = None
    if flags & _GET:
        old = _string(client, key)
        if type(old) is Error:
            return old
    if flags & (_NX | _XX):
        found = db.get(key) is not None
        if (flags & _NX and found) or (flags & _XX and not found):
            return old if flags & _GET else None
    db.set(key, value, keep_ttl=bool(flags & _KEEPTTL))
    if when is not None:
        db.set_expire(key, when)
        client.rewrite = [[b"SET", key, value, b"PXAT", b"%d" % when]]  # a relative time replays wrong
    return old if flags & _GET else OK


@command("getex", -2, WRITE)
def getex(client: Client, args: list[bytes]) -> Any:
    """GETEX key [EX s|PX ms|EXAT ts|PXAT ms|PERSIST]."""
    parsed = _parse_options(args, 2, _FOR_GETEX)
    if type(parsed) is Error:
        return parsed
    flags, expire = parsed  # type: ignore[misc]
    key = args[1]
    value = _string(client, key)
    if value is None or type(value) is Error:
        return value
    db = client.db
    if expire is not None:
        when = expire_at_ms(client, expire, flags, "getex")
        if isinstance(when, Error):
            return when
        if flags & (_EXAT | _PXAT) and when <= client.server.store.now:
            db.delete(key)
            client.rewrite = [[b"DEL", key]]
        else:
            db.set_expire(key, when)
            client.rewrite = [[b"PEXPIREAT", key, b"%d" % when]]
    elif flags & _PERSIST:
        db.persist(key)
        client.rewrite = [[b"PERSIST", key]]
    return value


@command("getdel", 2, WRITE)
def getdel(client: Client, args: list[bytes]) -> Any:
    """GETDEL key."""
    value = _string(client, args[1])
    if type(value) is bytes:
        client.db.delete(args[1])
    return value


@command("getset", 3, WRITE, DENYOOM)
def getset(client: Client, args: list[bytes]) -> Any:
    """GETSET key value."""
    old = _string(client, args[1])
    if type(old) is not Error:
        client.db.set(args[1], args[2])
    return old


@command("setnx", 3, WRITE, DENYOOM)
def setnx(client: Client, args: list[bytes]) -> Any:
    """SETNX key value."""
    db = client.db
    if db.get(args[1]) is not None:
        return 0
    db.set(args[1], args[2])
    return 1


@command("setex", 4, WRITE, DENYOOM)
def setex(client: Client, args: list[bytes]) -> Any:
    """SETEX key seconds value."""
    return _set(client, args[1], args[3], _EX, args[2], "setex")


@command("psetex", 4, WRITE, DENYOOM)
def psetex(client: Client, args: list[bytes]) -> Any:
    """PSETEX key milliseconds value."""
    return _set(client, args[1], args[3], _PX, args[2], "psetex")


@command("mget", -2)
def mget(client: Client, args: list[bytes]) -> Any:
    """MGET key [key ...]: a non-string is nil, never an error."""
    db = client.db
    return [string_bytes(db.get(key)) for key in args[1:]]


@command("mset", -3, WRITE, DENYOOM)
def mset(client: Client, args: list[bytes]) -> Any:
    """MSET key value [key value ...]."""
    if len(args) % 2 == 0:
        return replies.wrong_arity("mset")
    db = client.db
    for index in range(1, len(args), 2):
        db.set(args[index], args[index + 1])
    return OK


@command("msetnx", -3, WRITE, DENYOOM)
def msetnx(client: Client, args: list[bytes]) -> Any:
    """MSETNX key value [key value ...]: all or nothing."""
    if len(args) % 2 == 0:
        return replies.wrong_arity("msetnx")
    db = client.db
    if any(db.get(args[index]) is not None for index in range(1, len(args), 2)):
        return 0
    for index in range(1, len(args), 2):
        db.set(args[index], args[index + 1])
    return 1


@command("append", 3, WRITE, DENYOOM)
def append(client: Client, args: list[bytes]) -> Any:
    """APPEND key value: the new length."""
    value = _string(client, args[1])
    if type(value) is Error:
        return value
    if value is None:
        client.db.set(args[1], args[2])
        return len(args[2])
    if len(value) + len(args[2]) > MAX_BULK:
        return replies.TOO_BIG
    joined = value + args[2]
    client.db.set(args[1], joined, keep_ttl=True)
    return len(joined)


@command("strlen", 2)
def strlen(client: Client, args: list[bytes]) -> Any:
    """STRLEN key."""
    value = _string(client, args[1])
    if value is None:
        return 0
    return value if type(value) is Error else len(value)


@command("getrange", 4)
def getrange(client: Client, args: list[bytes]) -> Any:
    """GETRANGE key start end (inclusive, negative from the end)."""
    start, end = parse_int(args[2]), parse_int(args[3])
    if start is None or end is None:
        return replies.NOT_INTEGER
    value = _string(client, args[1])
    if value is None:
        return b""
    if type(value) is Error:
        return value
    size = len(value)
    if start < 0 and end < 0 and start > end:
        return b""
    if start < 0:
        start += size
    if end < 0:
        end += size
    start, end = max(start, 0), max(end, 0)
    end = min(end, size - 1)
    if start > end or size == 0:
        return b""
    return value[start : end + 1]


@command("substr", 4)
def substr(client: Client, args: list[bytes]) -> Any:
    """SUBSTR key start end: GETRANGE's old name."""
    return getrange(client, args)


@command("setrange", 4, WRITE, DENYOOM)
def setrange(client: Client, args: list[bytes]) -> Any:
    """SETRANGE key offset value: the new length."""
    offset = parse_int(args[2])
    if offset is None or offset > 2**63 - 1:
        return replies.NOT_INTEGER
    if offset < 0:
        return Error("ERR offset is out of range")
    patch = args[3]
    value = _string(client, args[1])
    if type(value) is Error:
        return value
    if not patch:
        return 0 if value is None else len(value)
    if offset + len(patch) > MAX_BULK:
        return replies.TOO_BIG
    old = value or b""
    if len(old) < offset:
        old += b"\0" * (offset - len(old))
    new = old[:offset] + patch + old[offset + len(patch) :]
    client.db.set(args[1], new, keep_ttl=True)
    return len(new)


def _incr(client: Client, key: bytes, by: int) -> Any:
    """Add ``by`` to the counter at ``key``, kept as an int from then on (no parse on the next one)."""
    db = client.db
    value = db.data.get(key)
    if type(value) is int and not db.expires and not db.store.watchers:
        # The common case made short: a live counter nobody watches, same size charged.
        result = value + by
        if not _INT64_MIN <= result <= _INT64_MAX:
            return replies.OVERFLOW
        db.data[key] = result
        db.store.dirty += 1
        return result
    value = db.get(key)
    if value is None:
        current: int | None = 0
    elif type(value) is int:
        current = value
    elif type(value) is bytes:
        current = parse_int(value)
    else:
        return replies.WRONGTYPE
    if current is None:
        return replies.NOT_INTEGER
    result = current + by
    if not _INT64_MIN <= result <= _INT64_MAX:
        return replies.OVERFLOW
    db.set(key, result, keep_ttl=True)
    return result


@command("incr", 2, WRITE, DENYOOM)
def incr(client: Client, args: list[bytes]) -> Any:
    """INCR key."""
    db = client.db
    value = db.data.get(args[1])
    if type(value) is int and value < _INT64_MAX and not db.expires and not db.store.watchers:
        value += 1  # _incr's common case, inline: the hottest write after SET
        db.data[args[1]] = value
        db.store.dirty += 1
        return value
    return _incr(client, args[1], 1)


@command("decr", 2, WRITE, DENYOOM)
def decr(client: Client, args: list[bytes]) -> Any:
    """DECR key."""
    return _incr(client, args[1], -1)


@command("incrby", 3, WRITE, DENYOOM)
def incrby(client: Client, args: list[bytes]) -> Any:
    """INCRBY key increment."""
    by = parse_int(args[2])
    return replies.NOT_INTEGER if by is None else _incr(client, args[1], by)


@command("decrby", 3, WRITE, DENYOOM)
def decrby(client: Client, args: list[bytes]) -> Any:
    """DECRBY key decrement."""
    by = parse_int(args[2])
    if by is None:
        return replies.NOT_INTEGER
    if by == _INT64_MIN:
        return Error("ERR decrement would overflow")
    return _incr(client, args[1], -by)


@command("incrbyfloat", 3, WRITE, DENYOOM)
def incrbyfloat(client: Client, args: list[bytes]) -> Any:
    """INCRBYFLOAT key increment (long double arithmetic, as Redis)."""
    value = _string(client, args[1])
    if type(value) is Error:
        return value
    current = parse_long_double(b"0" if value is None else value)
    by = parse_long_double(args[2])
    if current is None or by is None:
        return replies.NOT_FLOAT
    result = current + by
    if not result.__abs__() < float("inf"):
        return Error("ERR increment would produce NaN or Infinity")
    text = format_long_double(result)
    client.db.set(args[1], text, keep_ttl=True)
    return text
