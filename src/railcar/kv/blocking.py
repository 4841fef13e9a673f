"""Clients blocked by BLPOP, BRPOP, BLMOVE and BRPOPLPUSH until a list appears or their timeout passes.

A blocking command that finds nothing to pop returns a ``Blocked`` instead of a reply
(inside MULTI it answers at once, as Redis does).  The server then registers the client
here and runs none of its later requests until it is answered.  When a command creates
a list at a key clients wait on, the store notes the key (``Store.ready``); after that
command, ``serve_ready`` runs the waiting commands again, first blocked first served,
while the list has something for them, and hands back the replies to send.
``expire`` answers the clients whose timeout has passed.  Everything here runs under
the server's lock; sending the replies is the server's business.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from railcar.kv.client import Client
    from railcar.kv.store import Store


@dataclass(slots=True, eq=False)
class Blocked:
    """What a blocked client waits for: one of ``keys`` in database ``db`` to hold a list."""

    db: int
    keys: list[bytes]
    #: ``time.monotonic()`` past which the client gets ``timeout_reply``; None: no limit.
    deadline: float | None
    #: The command once more, without blocking, given the key that got a list (None: the first
    #: try, every key in order): its reply, or None while there is nothing.
    attempt: Callable[[bytes | None], Any]
    timeout_reply: Any


def deadline_after(timeout: float) -> float | None:
    """The deadline of a timeout in seconds as the commands take it (0: wait for ever)."""
    return None if timeout == 0 else time.monotonic() + timeout


def block(client: Client, blocked: Blocked) -> None:
    """Make ``client`` wait on ``blocked.keys``."""
    client.blocked = blocked
    waiting = client.server.store.blocked_on
    for key in dict.fromkeys(blocked.keys):  # a key named twice queues the client once
        waiting.setdefault((blocked.db, key), deque()).append(client)


def unblock(client: Client) -> None:
    """Stop ``client`` waiting (answered, timed out or gone)."""
    blocked = client.blocked
    if blocked is None:
        return
    client.blocked = None
    waiting = client.server.store.blocked_on
    for key in dict.fromkeys(blocked.keys):
        queue = waiting.get((blocked.db, key))
        if queue is not None:
            queue.remove(client)
            if not queue:
                del waiting[(blocked.db, key)]


def serve_ready(store: Store) -> list[tuple[Client, Any]]:
    """Run the commands of clients waiting on keys that got a list; return (client, reply) to send."""
    answered: list[tuple[Client, Any]] = []
    ready = store.ready
    while ready:
        entry = ready.pop(0)
        queue = store.blocked_on.get(entry)
        while queue:
            client = queue[0]
            reply = client.retry_blocked(entry[1])
            if reply is None:
                break  # the list is gone again: the rest keep waiting
            unblock(client)
            answered.append((client, reply))
    return answered


def expire(clients: list[Client], now: float) -> list[tuple[Client, Any]]:
    """Answer those of the blocked ``clients`` whose deadline has passed; return (client, reply)."""
    answered: list[tuple[Client, Any]] = []
    for client in clients:
        blocked = client.blocked
        if blocked is not None and blocked.deadline is not None and blocked.deadline <= now:
            unblock(client)
            answered.append((client, blocked.timeout_reply))
    return answered
