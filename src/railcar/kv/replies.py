"""The error replies the commands share, with Redis 7.0's exact texts."""

from __future__ import annotations

from typing import Final

from railcar.proto.resp import Error

WRONGTYPE: Final = Error("WRONGTYPE Operation against a key holding the wrong kind of value")
SYNTAX: Final = Error("ERR syntax error")
NOT_INTEGER: Final = Error("ERR value is not an integer or out of range")
NOT_FLOAT: Final = Error("ERR value is not a valid float")
OVERFLOW: Final = Error("ERR increment or decrement would overflow")
NO_SUCH_KEY: Final = Error("ERR no such key")
INDEX_OUT_OF_RANGE: Final = Error("ERR index out of range")
TOO_BIG: Final = Error("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
NOAUTH: Final = Error("NOAUTH Authentication required.")
WRONGPASS: Final = Error("WRONGPASS invalid username-password pair or user is disabled.")
EXECABORT: Final = Error("EXECABORT Transaction discarded because of previous errors.")


def wrong_arity(name: str) -> Error:
    """The arity error for command ``name`` (its full name, e.g. ``client|setname``)."""
    return Error(f"ERR wrong number of arguments for '{name}' command")


def out_of_range(low: int, high: int) -> Error:
    """Redis's error for an integer outside ``low..high`` (getRangeLongFromObjectOrReply)."""
    return Error(f"ERR value is out of range, value must between {low} and {high}")


def invalid_expire(name: str) -> Error:
    """The error for an expire time out of range in command ``name``."""
    return Error(f"ERR invalid expire time in '{name}' command")


def _c_string(arg: bytes, limit: int) -> str:
    """``arg`` as C's ``%.*s`` prints it: cut at a NUL byte and at ``limit`` bytes."""
    return arg.split(b"\0", 1)[0][:limit].decode("utf-8", "surrogateescape")


def unknown_command(args: list[bytes]) -> Error:
    """Redis's reply to an unknown command, quoting the start of its arguments."""
    quoted = ""
    for arg in args[1:]:
        if len(quoted.encode("utf-8", "surrogateescape")) >= 128:
            break
        room = 128 - len(quoted.encode("utf-8", "surrogateescape"))
        quoted += f"'{_c_string(arg, room)}' "
    return Error(f"ERR unknown command '{_c_string(args[0], 128)}', with args beginning with: {quoted}")


def unknown_subcommand(args: list[bytes]) -> Error:
    """Redis's reply to an unknown subcommand of a container command (CLIENT, CONFIG, COMMAND)."""
    container = _c_string(args[0], 1 << 20).upper()
    return Error(f"ERR unknown subcommand '{_c_string(args[1], 128)}'. Try {container} HELP.")
