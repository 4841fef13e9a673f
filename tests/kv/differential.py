"""Send the same requests to a real redis-server and to railcar's store; compare the replies."""

from __future__ import annotations

import socket
from typing import Any

import hiredis

from railcar.kv.client import Client
from railcar.kv.server import KvServer
from railcar.proto.resp import encode_command, encode_reply

#: Commands whose replies Redis orders by hash: compared as sorted lists.
UNORDERED = {b"keys", b"smembers", b"sinter", b"sunion", b"sdiff", b"hkeys", b"hvals", b"hgetall"}
#: SCAN-like replies: [cursor, members], the members in hash order.
SCANS = {b"sscan", b"hscan"}
#: Commands whose replies depend on the clock: integers may differ by one.
CLOCKED = {b"ttl", b"expiretime"}


class RedisConnection:
    """A blocking RESP connection to a real server, one request and one raw reply at a time."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)

    def call(self, args: list[bytes]) -> bytes:
        self.sock.sendall(encode_command(*args))
        return read_reply(self.sock)

    def close(self) -> None:
        self.sock.close()


def read_reply(sock: socket.socket) -> bytes:
    """The raw bytes of exactly one reply (the caller sent exactly one request)."""
    reader = hiredis.Reader()
    raw = bytearray()
    while True:
        chunk = sock.recv(65536)
        assert chunk, "server closed the connection"
        raw += chunk
        reader.feed(chunk)
        if reader.gets() is not False:
            assert not reader.has_data(), "more than one reply"
            return bytes(raw)


class StoreConnection:
    """railcar's store, driven in-process through one client session."""

    def __init__(self, server: KvServer | None = None) -> None:
        self.server = server or KvServer()
        self.client: Client = self.server.new_client()

    def call(self, args: list[bytes]) -> bytes:
        self.server.store.tick()
        out = bytearray()
        encode_reply(self.client.execute(args), out, self.client.resp3)
        return bytes(out)


def parse(raw: bytes) -> Any:
    reader = hiredis.Reader()
    reader.feed(raw)
    return _plain(reader.gets())


def _plain(value: Any) -> Any:
    if isinstance(value, Exception):
        return ("error", str(value))
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return [_plain(item) for pair in value.items() for item in pair]
    if isinstance(value, set):
        return sorted(value)
    return value


def _sorted(value: Any) -> Any:
    if isinstance(value, list) and all(isinstance(item, bytes) for item in value):
        return sorted(value)
    return value


def same_reply(args: list[bytes], queued: list[bytes], expected: bytes, got: bytes) -> bool:
    """True if railcar's reply ``got`` matches Redis's ``expected`` for request ``args``."""
    if expected == got:
        return True
    name = args[0].lower()
    want, have = parse(expected), parse(got)
    if name == b"exec" and isinstance(want, list) and isinstance(have, list) and len(want) == len(have):
        return all(_same_parsed(command, w, h) for command, w, h in zip(queued, want, have, strict=True))
    return _same_parsed(name, want, have)


def _same_parsed(name: bytes, want: Any, have: Any) -> bool:
    if name == b"hgetall" and isinstance(want, list) and isinstance(have, list):
        return sorted(zip(want[::2], want[1::2], strict=True)) == sorted(
            zip(have[::2], have[1::2], strict=True)
        )
    if name in SCANS and isinstance(want, list) and isinstance(have, list) and len(want) == len(have) == 2:
        if name == b"hscan":
            return want[0] == have[0] and _same_parsed(b"hgetall", want[1], have[1])
        return want[0] == have[0] and _sorted(want[1]) == _sorted(have[1])
    if name in UNORDERED:
        return bool(_sorted(want) == _sorted(have))
    if name in CLOCKED and isinstance(want, int) and isinstance(have, int):
        return abs(want - have) <= 1
    return bool(want == have)
