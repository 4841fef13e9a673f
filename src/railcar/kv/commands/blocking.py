"""The blocking list commands: BLPOP, BRPOP, BLMOVE, BRPOPLPUSH (waiting is ``kv/blocking.py``'s)."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from railcar.kv import replies
from railcar.kv.args import parse_long_double
from railcar.kv.blocking import Blocked, deadline_after
from railcar.kv.commands.lists import _end, _list, _move
from railcar.kv.store import ELEMENT_OVERHEAD
from railcar.kv.table import BLOCKING, DENYOOM, WRITE, command
from railcar.proto.resp import NULL_ARRAY, Error

if TYPE_CHECKING:
    from railcar.kv.client import Client

_NOT_A_TIMEOUT = Error("ERR timeout is not a float or out of range")
_NEGATIVE = Error("ERR timeout is negative")
_TOO_LONG = Error("ERR timeout is out of range")
_MAX_MS = 2**63 - 1


def _timeout(arg: bytes) -> float | Error:
    """Seconds as Redis reads a blocking command's timeout (a float; 0 waits for ever)."""
    value = parse_long_double(arg)
    if value is None:
        return _NOT_A_TIMEOUT
    if value * 1000 > _MAX_MS:
        return _TOO_LONG
    if value < 0:
        return _NEGATIVE
    return float(value)


def _wait_or_answer(client: Client, blocked: Blocked) -> Any:
    """Try once; with nothing to pop, block, unless inside EXEC (Redis answers as on a timeout)."""
    reply = blocked.attempt(None)
    if reply is not None:
        return reply
    return blocked.timeout_reply if client.in_exec else blocked


def _pop_first(client: Client, keys: list[bytes], left: bool, woken: bool) -> Any:
    """[key, element] off the first of ``keys`` holding a list, WRONGTYPE, or None for none."""
    db = client.db
    for key in keys:
        items = db.get(key)
        if items is None:
            continue
        if type(items) is not deque:
            if woken:
                continue  # Redis leaves a woken client blocked when the key is no list
            return replies.WRONGTYPE
        item = items.popleft() if left else items.pop()
        db.grew(key, -len(item) - ELEMENT_OVERHEAD)  # before a delete, which counts only what is left
        if not items:
            db.delete(key)
        client.rewrite = [[b"LPOP" if left else b"RPOP", key]]
        return [key, item]
    return None


def _bpop(client: Client, args: list[bytes], left: bool) -> Any:
    timeout = _timeout(args[-1])
    if isinstance(timeout, Error):
        return timeout
    keys = args[1:-1]

    def attempt(ready: bytes | None) -> Any:
        # Woken, it pops from the key that got a list, as Redis serves a client per key.
        return _pop_first(client, keys if ready is None else [ready], left, woken=ready is not None)

    blocked = Blocked(client.db.index, keys, deadline_after(timeout), attempt, NULL_ARRAY)
    return _wait_or_answer(client, blocked)


@command("blpop", -3, WRITE, BLOCKING)
def blpop(client: Client, args: list[bytes]) -> Any:
    """BLPOP key [key ...] timeout."""
    return _bpop(client, args, left=True)


@command("brpop", -3, WRITE, BLOCKING)
def brpop(client: Client, args: list[bytes]) -> Any:
    """BRPOP key [key ...] timeout."""
    return _bpop(client, args, left=False)


def _bmove(
    client: Client, source: bytes, target: bytes, ends: tuple[bytes, bytes], timeout_arg: bytes
) -> Any:
    from_left, to_left = _end(ends[0]), _end(ends[1])
    if from_left is None or to_left is None:
        return replies.SYNTAX
    timeout = _timeout(timeout_arg)
    if isinstance(timeout, Error):
        return timeout

    def attempt(ready: bytes | None) -> Any:
        if ready is not None and type(_list(client, source)) is Error:
            return None  # woken by a key that is no list: keep waiting, as Redis does
        reply = _move(client, source, target, from_left, to_left)
        if reply is not None and type(reply) is not Error:
            client.rewrite = [[b"LMOVE", source, target, ends[0], ends[1]]]
        return reply

    blocked = Blocked(client.db.index, [source], deadline_after(timeout), attempt, None)
    return _wait_or_answer(client, blocked)


@command("blmove", 6, WRITE, DENYOOM, BLOCKING)
def blmove(client: Client, args: list[bytes]) -> Any:
    """BLMOVE source destination LEFT|RIGHT LEFT|RIGHT timeout."""
    return _bmove(client, args[1], args[2], (args[3], args[4]), args[5])


@command("brpoplpush", 4, WRITE, DENYOOM, BLOCKING)
def brpoplpush(client: Client, args: list[bytes]) -> Any:
    """BRPOPLPUSH source destination timeout."""
    return _bmove(client, args[1], args[2], (b"RIGHT", b"LEFT"), args[3])
