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


def _moto_loads_only_its_default_amis() -> None:
    """Every new moto EC2 backend loads ~1,300 AMIs (its 44 default ones, then the region's
    latest and ECS-optimized ones): 0.08 s, twice per test (at a reset, then at the first EC2
    call), and every instance launch filters them all. The tests use default ones only, so
    `MOTO_AMIS_PATH` (read when moto's EC2 models are first imported, which is later) points
    at a copy of moto's own default catalog, and moto loads just that."""
    if "MOTO_AMIS_PATH" in os.environ:
        return
    import gzip
    import tempfile
    from importlib.metadata import version
    from importlib.util import find_spec

    spec = find_spec("moto")  # not imported: importing moto.ec2 would read the catalog now
    assert spec is not None and spec.origin is not None
    catalog = Path(spec.origin).parent / "ec2" / "resources" / "amis.json.gz"
    copy = Path(tempfile.gettempdir()) / f"restarter-tests-moto-{version('moto')}-amis.json"
    if not copy.exists():
        partial = copy.with_suffix(f".{os.getpid()}.part")
        partial.write_bytes(gzip.decompress(catalog.read_bytes()))
        partial.replace(copy)  # atomic: parallel test processes may write it at the same time
    os.environ["MOTO_AMIS_PATH"] = str(copy)


_moto_loads_only_its_default_amis()

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
