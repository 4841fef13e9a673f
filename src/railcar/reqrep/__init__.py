"""Batched request–response: servers on any engine; asyncio, threaded and pooled clients that reconnect."""

from __future__ import annotations

from railcar.clientcore.dial import Dial
from railcar.reqrep.answering import MODES, Mode
from railcar.reqrep.client import Client
from railcar.reqrep.pool import ClientPool, SyncClientPool
from railcar.reqrep.server import ReqRepHandler, create_reqrep_server
from railcar.reqrep.sync import SyncClient, SyncDial

__all__ = [
    "MODES",
    "Client",
    "ClientPool",
    "Dial",
    "Mode",
    "ReqRepHandler",
    "SyncClient",
    "SyncClientPool",
    "SyncDial",
    "create_reqrep_server",
]
