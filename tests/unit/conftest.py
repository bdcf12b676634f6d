"""Unit tests run against in-memory fakes (tests/unit/fakes.py): no moto, no embedded AWS."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from restarter.domain.models import RestartRecord
from restarter.services.restart_intake import accept_restart
from tests.unit.fakes import FakeWorld

StartRestart = Callable[..., RestartRecord]


@pytest.fixture
def world() -> FakeWorld:
    """A fresh fake cloud, stores, lock, audit, event bus, executions and a clock standing still."""
    return FakeWorld()


@pytest.fixture
def start_restart(world: FakeWorld) -> StartRestart:
    """Accept a restart the way every trigger does (validation, plan, lock, record, execution)."""

    def _start(cluster_id: str = "cluster_abc123", body: dict[str, Any] | None = None) -> RestartRecord:
        return accept_restart(world.deps, cluster_id, body or {}, trigger="cli", requested_by="tests@example.com")

    return _start
