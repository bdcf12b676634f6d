"""What every test level shares: offline AWS settings, the repository's paths and samples, and
log levels put back after each test."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_DEV", "false")

REPO = Path(__file__).resolve().parents[1]
EVENTS = REPO / "events"
SHARED_DATA = REPO.parent / "shared" / "data"


def load_event(name: str) -> dict[str, Any]:
    return dict(json.loads((EVENTS / name).read_text()))


@pytest.fixture(autouse=True)
def _restore_log_levels() -> Iterator[None]:
    """CLI commands quiet the logs process-wide; later tests read log records again."""
    import logging

    from restarter.observability import logger

    names = [logger.name, "", "moto"]
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
