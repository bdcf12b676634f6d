"""`restarter serve` as a command: quiet logs, a one-line error and exit code 2 when the server
cannot start, else serve until Ctrl-C. The CLI calls `main_serve`; `LocalServer` is the library."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

from restarter_local.fleet_file import FleetFileError
from restarter_local.server import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_TIME_SCALE, LocalServer, ServerError


def _quiet_logs() -> None:
    """Warnings and errors only, unless the user asked for a log level."""
    level = os.environ.get("POWERTOOLS_LOG_LEVEL") or os.environ.get("LOG_LEVEL") or "WARNING"
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", level)
    logging.getLogger().setLevel(level)
    # moto's interpreter logs every failed execution at ERROR; the restart records say why.
    logging.getLogger("moto").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    from restarter.observability import logger

    logger.setLevel(level)


def main_serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    fleet: Path | str | None = None,
    time_scale: float = DEFAULT_TIME_SCALE,
    api_key: str | None = None,
) -> int:
    """`restarter serve`: 2 with a one-line error when it cannot start, else 0 once stopped."""
    _quiet_logs()
    try:
        server = LocalServer(host=host, port=port, fleet=fleet, time_scale=time_scale, api_key=api_key, access_log=True)
        server.start()
    except (ServerError, FleetFileError) as exc:
        print(f"restarter serve: {exc}", file=sys.stderr)
        return 2
    return server.serve_forever_until_interrupted()
