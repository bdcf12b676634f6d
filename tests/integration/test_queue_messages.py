"""The queue's pure parsing: a restart or a rollout body, malformed bodies as validation errors, and
the priority ranking (recovery first, unknown queues are maintenance)."""

from __future__ import annotations

import json

import pytest

from restarter.domain.errors import RequestValidationError
from restarter.domain.queue_messages import (
    RestartMessage,
    RolloutMessage,
    parse_queue_message,
    priority_rank,
)
from restarter.handlers.queue import queue_name_from_arn

MAINTENANCE_QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:restarter-dev-maintenance"


# ---------------------------------------------------------------- the pure parsing


def test_given_a_restart_body_when_parsed_then_cluster_id_and_request_are_split() -> None:
    message = parse_queue_message(
        json.dumps({"cluster_id": "cluster_abc123", "force": True, "idempotency_key": "k1"}), priority="Recovery"
    )
    assert message == RestartMessage(
        cluster_id="cluster_abc123", request={"force": True}, idempotency_key="k1", priority="recovery"
    )


def test_given_a_rollout_body_when_parsed_then_it_is_a_rollout() -> None:
    message = parse_queue_message(json.dumps({"rollout": {"clusters": ["cluster_abc123"]}, "idempotency_key": "k1"}))
    assert message == RolloutMessage(
        rollout={"clusters": ["cluster_abc123"]}, idempotency_key="k1", priority="maintenance"
    )


@pytest.mark.parametrize(
    ("body", "attributes", "field"),
    [
        ('{"cluster_id": "cluster_abc123", ', {}, "body"),
        ("[1, 2]", {}, "body"),
        ('{"force": true}', {}, "cluster_id"),
        ('{"cluster_id": "bad id with spaces"}', {}, "cluster_id"),
        ('{"cluster_id": "c1", "rollout": {}}', {}, "body"),
        ('{"cluster_id": "c1"}', {"priority": "urgent"}, "priority"),
        ('{"cluster_id": "c1", "idempotency_key": "a"}', {"idempotency_key": "b"}, "idempotency_key"),
    ],
)
def test_given_a_malformed_body_when_parsed_then_it_is_a_validation_error(
    body: str, attributes: dict[str, str], field: str
) -> None:
    with pytest.raises(RequestValidationError) as caught:
        parse_queue_message(body, **attributes)
    assert caught.value.code == "VALIDATION_ERROR"
    assert caught.value.details["errors"][0]["field"] == field


def test_given_priorities_when_ranked_then_recovery_goes_first_and_unknown_is_maintenance() -> None:
    assert priority_rank("recovery") < priority_rank("maintenance") == priority_rank(None) == priority_rank("x")
    assert queue_name_from_arn(MAINTENANCE_QUEUE_ARN) == "restarter-dev-maintenance"
