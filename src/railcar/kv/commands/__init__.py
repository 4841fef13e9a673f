"""Every command family; importing this package fills the command table."""

from railcar.kv.commands import connection, expiry, hashes, keyspace, lists, sets, strings

__all__ = ["connection", "expiry", "hashes", "keyspace", "lists", "sets", "strings"]
