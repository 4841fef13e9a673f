"""Batched request–response: servers on any engine, asyncio and threaded clients."""

from __future__ import annotations

from railcar.reqrep.answering import MODES, Mode
from railcar.reqrep.client import Client, ClientPool
from railcar.reqrep.server import ReqRepHandler, create_reqrep_server

__all__ = ["MODES", "Client", "ClientPool", "Mode", "ReqRepHandler", "create_reqrep_server"]
