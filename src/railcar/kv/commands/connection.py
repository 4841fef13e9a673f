"""Connection, server and transaction commands: PING, HELLO, AUTH, CLIENT, INFO, CONFIG, MULTI, ..."""

from __future__ import annotations

import hmac
import os
import time
from typing import TYPE_CHECKING, Any

from railcar.kv import replies
from railcar.kv.args import parse_int
from railcar.kv.glob import match
from railcar.kv.memory import POLICIES, SUPPORTED_POLICY, parse_memory
from railcar.kv.table import NOAUTH, NOMULTI, TABLE, command, container
from railcar.proto.resp import OK, PONG, Error, Simple, Verbatim

if TYPE_CHECKING:
    from railcar.kv.client import Client


@command("ping", -1)
def ping(client: Client, args: list[bytes]) -> Any:
    """PING [message]."""
    if len(args) > 2:
        return replies.wrong_arity("ping")
    return PONG if len(args) == 1 else args[1]


@command("echo", 2)
def echo(client: Client, args: list[bytes]) -> Any:
    """ECHO message."""
    return args[1]


def _check_password(client: Client, user: bytes, password: bytes) -> Error | None:
    required = client.server.requirepass
    if user != b"default" or (required is not None and not hmac.compare_digest(password, required)):
        return replies.WRONGPASS
    client.authenticated = True
    return None


@command("auth", -2, NOAUTH)
def auth(client: Client, args: list[bytes]) -> Any:
    """AUTH [username] password."""
    if len(args) > 3:
        return replies.SYNTAX
    if len(args) == 2 and client.server.requirepass is None:
        return Error(
            "ERR AUTH <password> called without any password configured for the default user. "
            "Are you sure your configuration is correct?"
        )
    user = args[1] if len(args) == 3 else b"default"
    error = _check_password(client, user, args[-1])
    return OK if error is None else error


@command("hello", -1, NOAUTH)
def hello(client: Client, args: list[bytes]) -> Any:
    """HELLO [protover [AUTH username password] [SETNAME name]]: switch RESP2/3, describe the server."""
    version = 0
    index = 1
    if len(args) >= 2:
        version_arg = parse_int(args[1])
        if version_arg is None:
            return Error("ERR Protocol version is not an integer or out of range")
        if not 2 <= version_arg <= 3:
            return Error("NOPROTO unsupported protocol version")
        version = version_arg
        index = 2
    credentials = None
    name = None
    while index < len(args):
        option = args[index].lower()
        more = len(args) - 1 - index
        if option == b"auth" and more >= 2:
            credentials = (args[index + 1], args[index + 2])
            index += 2
        elif option == b"setname" and more:
            name = args[index + 1]
            index += 1
        else:
            text = args[index].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            return Error(f"ERR Syntax error in HELLO option '{text}'")
        index += 1
    if credentials is not None:
        error = _check_password(client, *credentials)
        if error is not None:
            return error
    if not client.authenticated:
        return Error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the "
            "HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and "
            "select the RESP protocol version at the same time"
        )
    if name is not None:
        error = _set_name(client, name)
        if error is not None:
            return error
    if version:
        client.resp3 = version == 3
    from railcar.kv.server import REDIS_VERSION  # noqa: PLC0415 - server imports the commands

    return {
        b"server": b"redis",
        b"version": REDIS_VERSION.encode(),
        b"proto": 3 if client.resp3 else 2,
        b"id": client.id,
        b"mode": b"standalone",
        b"role": b"master",
        b"modules": [],
    }


container("client", -2)


def _set_name(client: Client, name: bytes) -> Error | None:
    if any(byte < 0x21 or byte > 0x7E for byte in name):
        return Error("ERR Client names cannot contain spaces, newlines or special characters.")
    client.name = name or None
    return None


@command("client|setname", 3)
def client_setname(client: Client, args: list[bytes]) -> Any:
    """CLIENT SETNAME name (empty clears it)."""
    error = _set_name(client, args[2])
    return OK if error is None else error


@command("client|getname", 2)
def client_getname(client: Client, args: list[bytes]) -> Any:
    """CLIENT GETNAME."""
    return client.name


@command("client|id", 2)
def client_id(client: Client, args: list[bytes]) -> Any:
    """CLIENT ID."""
    return client.id


@command("client|list", -2)
def client_list(client: Client, args: list[bytes]) -> Any:
    """CLIENT LIST: one line per connection, with the fields tools read."""
    lines = []
    for other in client.server.clients.values():
        peer = other.peer
        address = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
        name = (other.name or b"").decode("utf-8", "replace")
        lines.append(
            f"id={other.id} addr={address} name={name} db={other.db.index} resp={3 if other.resp3 else 2}\n"
        )
    return Verbatim("".join(lines).encode())


def _info(client: Client, sections: set[str]) -> bytes:
    from railcar.kv.server import REDIS_VERSION  # noqa: PLC0415 - server imports the commands

    server = client.server
    store = server.store
    every = not sections or sections & {"all", "everything", "default"}
    parts = []
    if every or "server" in sections:
        parts.append(
            "# Server\r\n"
            f"redis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\nos:railcar\r\n"
            f"process_id:{os.getpid()}\r\nuptime_in_seconds:{int(time.time() - server.started)}\r\n"
        )
    if every or "clients" in sections:
        blocked = sum(1 for each in server.clients.values() if each.blocked is not None)
        parts.append(f"# Clients\r\nconnected_clients:{len(server.clients)}\r\nblocked_clients:{blocked}\r\n")
    if every or "memory" in sections:
        parts.append(
            f"# Memory\r\nused_memory:{store.used}\r\nmaxmemory:{server.maxmemory}\r\n"
            f"maxmemory_policy:{SUPPORTED_POLICY}\r\n"
        )
    if every or "persistence" in sections:
        aof = server.aof
        parts.append(
            "# Persistence\r\nloading:0\r\n"
            f"aof_enabled:{int(aof is not None)}\r\n"
            f"aof_rewrite_in_progress:{int(aof is not None and aof.rewriting)}\r\n"
            f"aof_rewrites:{aof.rewrites if aof is not None else 0}\r\n"
        )
    if every or "stats" in sections:
        parts.append(
            "# Stats\r\n"
            f"total_connections_received:{server.connections_received}\r\n"
            f"total_commands_processed:{server.commands_processed}\r\n"
        )
    if every or "keyspace" in sections:
        lines = [
            f"db{db.index}:keys={len(db.data)},expires={len(db.expires)},avg_ttl=0\r\n"
            for db in store.dbs
            if db.data
        ]
        parts.append("# Keyspace\r\n" + "".join(lines))
    return "\r\n".join(parts).encode()


@command("info", -1)
def info(client: Client, args: list[bytes]) -> Any:
    """INFO [section ...]: server, clients, memory, persistence, stats and keyspace."""
    return Verbatim(_info(client, {arg.decode("utf-8", "replace").lower() for arg in args[1:]}))


container("config", -2)


@command("config|get", -3)
def config_get(client: Client, args: list[bytes]) -> Any:
    """CONFIG GET pattern [pattern ...]: every parameter that matches, name and value."""
    config = client.server.config
    patterns = [pattern.lower() for pattern in args[2:]]
    return {
        name: value
        for name, value in config.items()
        if any(match(pattern, name, nocase=True) for pattern in patterns)
    }


def _config_failed(name: str, reason: str) -> Error:
    return Error(f"ERR CONFIG SET failed (possibly related to argument '{name}') - {reason}")


def _config_refusal(settings: dict[bytes, bytes], appendonly: bytes) -> Error | None:
    """Why CONFIG SET must change nothing (Redis applies all of the settings or none), or None.

    ``appendonly`` is the server's (``yes`` once it records to a file): it cannot change while running.
    """
    wanted = settings.get(b"appendonly")
    if wanted is not None:
        if wanted.lower() not in (b"yes", b"no"):
            return _config_failed("appendonly", "argument must be 'yes' or 'no'")
        if wanted.lower() != appendonly:
            return _config_failed(
                "appendonly",
                "railcar opens its append-only file at start: restart with or without --appendonly PATH",
            )
    fsync = settings.get(b"appendfsync")
    if fsync is not None and fsync.lower() not in (b"always", b"everysec", b"no"):
        return _config_failed("appendfsync", "argument(s) must be one of the following: everysec, always, no")
    maxmemory = settings.get(b"maxmemory")
    if maxmemory is not None:
        try:
            parse_memory(maxmemory.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            return _config_failed("maxmemory", "argument must be a memory value")
    policy = settings.get(b"maxmemory-policy")
    if policy is not None:
        chosen = policy.decode("latin-1").lower()
        if chosen not in POLICIES:
            return _config_failed(
                "maxmemory-policy", f"argument(s) must be one of the following: {', '.join(POLICIES)}"
            )
        if chosen != SUPPORTED_POLICY:
            return _config_failed("maxmemory-policy", f"railcar evicts nothing: only {SUPPORTED_POLICY}")
    return None


@command("config|set", -4)
def config_set(client: Client, args: list[bytes]) -> Any:
    """CONFIG SET name value [...]: requirepass, appendfsync, maxmemory act (appendonly cannot change)."""
    if len(args) % 2:
        return replies.wrong_arity("config|set")
    server = client.server
    settings = {args[index].lower(): args[index + 1] for index in range(2, len(args), 2)}
    refusal = _config_refusal(settings, server.config[b"appendonly"])
    if refusal is not None:
        return refusal
    for name, value in settings.items():
        server.config[name] = value.lower() if name == b"appendonly" else value
    if b"requirepass" in settings:
        # As in Redis: connections already authenticated stay so; new ones need the new password.
        server.requirepass = settings[b"requirepass"] or None
    fsync = settings.get(b"appendfsync")
    if fsync is not None and server.aof is not None:
        server.aof.set_fsync(fsync.lower().decode())
    if b"maxmemory" in settings:
        server.maxmemory = parse_memory(settings[b"maxmemory"].decode("ascii"))
        server.config[b"maxmemory"] = str(server.maxmemory).encode()  # CONFIG GET gives bytes
    if b"maxmemory-policy" in settings:
        server.config[b"maxmemory-policy"] = SUPPORTED_POLICY.encode()
    return OK


@command("config|resetstat", 2)
def config_resetstat(client: Client, args: list[bytes]) -> Any:
    """CONFIG RESETSTAT."""
    client.server.commands_processed = 0
    return OK


def _command_info(name: bytes) -> list[Any]:
    entry = TABLE[name]
    flags = [flag.encode() for flag in sorted(entry.flags)]
    return [name, entry.arity, flags, 0, 0, 0]


def _every_command(client: Client, args: list[bytes]) -> Any:
    """COMMAND: a short description of every command."""
    return [_command_info(name) for name in TABLE]


container("command", -1, bare=_every_command)


@command("command|count", 2)
def command_count(client: Client, args: list[bytes]) -> Any:
    """COMMAND COUNT."""
    return len(TABLE)


@command("command|docs", -2)
def command_docs(client: Client, args: list[bytes]) -> Any:
    """COMMAND DOCS [name ...]: a minimal document (a summary) per command."""
    names = [arg.lower() for arg in args[2:]] or list(TABLE)
    return {name: {b"summary": name.upper() + b" command"} for name in names if name in TABLE}


@command("command|info", -2)
def command_info(client: Client, args: list[bytes]) -> Any:
    """COMMAND INFO [name ...]."""
    names = [arg.lower() for arg in args[2:]] or list(TABLE)
    return [_command_info(name) if name in TABLE else None for name in names]


@command("time", 1)
def time_(client: Client, args: list[bytes]) -> Any:
    """TIME: unix seconds and microseconds."""
    now = time.time_ns() // 1000
    return [b"%d" % (now // 1_000_000), b"%d" % (now % 1_000_000)]


@command("lastsave", 1)
def lastsave(client: Client, args: list[bytes]) -> Any:
    """LASTSAVE: the server's start (nothing is saved)."""
    return int(client.server.started)


@command("multi", 1, NOMULTI)
def multi(client: Client, args: list[bytes]) -> Any:
    """MULTI."""
    return client.begin()


@command("exec", 1, NOMULTI)
def exec_(client: Client, args: list[bytes]) -> Any:
    """EXEC."""
    return client.exec()


@command("discard", 1, NOMULTI)
def discard(client: Client, args: list[bytes]) -> Any:
    """DISCARD."""
    if client.multi is None:
        return Error("ERR DISCARD without MULTI")
    client.discard()
    return OK


@command("watch", -2, NOMULTI)
def watch(client: Client, args: list[bytes]) -> Any:
    """WATCH key [key ...]."""
    if client.multi is not None:
        return Error("ERR WATCH inside MULTI is not allowed")
    client.watch(args[1:])
    return OK


@command("unwatch", 1)
def unwatch(client: Client, args: list[bytes]) -> Any:
    """UNWATCH."""
    client.unwatch()
    return OK


@command("bgrewriteaof", 1)
def bgrewriteaof(client: Client, args: list[bytes]) -> Any:
    """BGREWRITEAOF: rewrite the append-only file from the store, in the background."""
    from railcar.kv.aof import snapshot_of  # noqa: PLC0415 - aof imports the server, which imports this

    aof = client.server.aof
    if aof is None:
        return Error("ERR no append-only file to rewrite: start the server with --appendonly PATH")
    if aof.rewriting:
        return Error("ERR Background append only file rewriting already in progress")
    aof.flush()  # what ran before is in the snapshot: it must not be in the rewrite's buffer too
    aof.start_rewrite(snapshot_of(client.server))
    return Simple("Background append only file rewriting started")
