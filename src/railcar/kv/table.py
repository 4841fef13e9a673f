"""The command table: name → arity, flags and the function that runs it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from railcar.kv.client import Client

CommandFn = Callable[["Client", list[bytes]], Any]

#: Flags (Redis's names): ``write`` changes data, ``noauth`` runs before AUTH,
#: ``nomulti`` runs at once inside MULTI instead of being queued, ``denyoom`` may grow the data
#: and is refused past maxmemory.
WRITE = "write"
DENYOOM = "denyoom"
NOAUTH = "noauth"
NOMULTI = "nomulti"
#: ``blocking`` may answer later (BLPOP): never run straight from a batch (``HOT``).
BLOCKING = "blocking"


@dataclass(frozen=True, slots=True)
class Command:
    """One command: ``arity`` as Redis counts it (n: exactly n words, -n: at least n)."""

    name: str
    arity: int
    flags: frozenset[str]
    fn: CommandFn
    subcommands: dict[bytes, Command] | None = None

    def arity_ok(self, argc: int) -> bool:
        """True if ``argc`` words (the name included) fit the arity."""
        arity = self.arity
        return argc == arity if arity > 0 else argc >= -arity


#: Lower-case name → command; filled by the ``command`` decorator as the modules import.
TABLE: dict[bytes, Command] = {}


def command(name: str, arity: int, *flags: str) -> Callable[[CommandFn], CommandFn]:
    """Register the decorated function as command ``name`` (``container|sub`` for a subcommand)."""

    def register(fn: CommandFn) -> CommandFn:
        container, _, sub = name.partition("|")
        entry = Command(name, arity, frozenset(flags), fn)
        if sub:
            parent = TABLE[container.encode()]
            assert parent.subcommands is not None, f"{container} takes no subcommands"
            parent.subcommands[sub.encode()] = entry
        else:
            TABLE[name.encode()] = entry
        return fn

    return register


def container(name: str, arity: int, *flags: str, bare: CommandFn | None = None) -> None:
    """Register ``name`` as a command with subcommands (CLIENT, CONFIG, COMMAND); ``bare`` runs it alone."""

    def unreachable(client: Client, args: list[bytes]) -> Any:  # arity -2: never called alone
        raise AssertionError(name)

    TABLE[name.encode()] = Command(name, arity, frozenset(flags), bare or unreachable, {})


#: Exact spellings (lower and upper case) → (function, least words, most words), for the common
#: case of a known command outside MULTI after AUTH: no lower-casing, flag or subcommand checks.
FAST: dict[bytes, tuple[CommandFn, int, int]] = {}


#: Words in a request -> exact spellings -> function, for the commands a server may run straight
#: from a batch while the client is outside MULTI, authenticated, and no append-only file is
#: kept: those that cannot change any of that (no ``noauth`` or ``nomulti`` flag, no subcommands),
#: with their arity already checked by the index.  Longer requests take ``Client.execute``.
HOT: list[dict[bytes, CommandFn]] = [{} for _ in range(8)]


def build_fast_table() -> None:
    """Fill ``FAST`` and ``HOT`` from ``TABLE``; call once every command is registered."""
    for name, entry in TABLE.items():
        if entry.subcommands is None:
            most = entry.arity if entry.arity > 0 else 1 << 62
            FAST[name] = FAST[name.upper()] = (entry.fn, abs(entry.arity), most)
            if entry.flags & {NOAUTH, NOMULTI, BLOCKING}:
                continue
            for argc, by_name in enumerate(HOT):
                if entry.arity_ok(argc):
                    by_name[name] = by_name[name.upper()] = entry.fn
