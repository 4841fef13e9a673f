"""Supervisors of two workers on every engine and architecture, stopped after each test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from railcar import Handler
from railcar.workers.settings import ARCHITECTURES
from railcar.workers.supervisor import Supervisor

WORKERS = 2


@pytest.fixture(params=ARCHITECTURES)
def architecture(request: pytest.FixtureRequest) -> str:
    """Each architecture, one after the other."""
    return str(request.param)


@pytest.fixture
def serve(engine: str, architecture: str) -> Iterator[Any]:
    """Like the conformance suite's ``serve``, but each server is two workers under a supervisor."""
    supervisors: list[Supervisor] = []

    def start(handler: Handler, **options: Any) -> Supervisor:
        supervisor = Supervisor(
            lambda: handler, workers=WORKERS, architecture=architecture, engine=engine, **options
        )
        supervisor.start()
        supervisors.append(supervisor)
        return supervisor

    yield start
    for supervisor in supervisors:
        supervisor.stop(deadline=1.0)
