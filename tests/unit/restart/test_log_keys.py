"""Every log line of a restart step names the restart, its cluster, its tenant and the phase, as
keys (Powertools `append_keys`), so that one query finds a restart's whole story."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

from restarter.handlers.restart_step import lambda_handler
from restarter.observability import logger
from restarter.wiring import use_dependencies
from tests.unit.conftest import StartRestart
from tests.unit.fakes import FakeWorld


class LambdaContextStandIn:
    function_name = "RestartStepFunction"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:RestartStepFunction"
    memory_limit_in_mb = 256
    aws_request_id = "3f1f2b6a-1111-4c1e-9e39-1c2d3e4f5a6b"
    log_group_name = "/aws/lambda/RestartStepFunction"
    log_stream_name = "2026/12/03/[$LATEST]0123456789abcdef"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 120_000


def test_given_a_restart_step_when_it_logs_then_every_line_carries_the_restart_keys(
    world: FakeWorld, start_restart: StartRestart
) -> None:
    record = start_restart(world.seed_cluster().id)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)  # the function's own formatter, into a buffer
    handler.setFormatter(logger.registered_formatter)
    logging.getLogger(logger.name).addHandler(handler)
    use_dependencies(world.deps)
    try:
        lambda_handler(
            {"action": "advance", "restart_id": record.id, "phase": record.plan[2], "attempt": 0},
            LambdaContextStandIn(),
        )
    finally:
        use_dependencies(None)
        logging.getLogger(logger.name).removeHandler(handler)
    lines: list[dict[str, Any]] = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines, "the step logged nothing"
    for line in lines:
        assert (line["restart_id"], line["cluster_id"], line["tenant"], line["phase"]) == (
            record.id,
            record.cluster_id,
            "default",
            record.plan[2],
        ), line
