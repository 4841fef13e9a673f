"""Every command family; importing this package fills the command table."""

from railcar.kv.commands import blocking, connection, expiry, hashes, keyspace, lists, sets, strings
from railcar.kv.table import build_fast_table

build_fast_table()

__all__ = ["blocking", "connection", "expiry", "hashes", "keyspace", "lists", "sets", "strings"]
