"""QueueRestartFunction handling SQS batches: one restart per cluster, poison messages reported as
partial batch failures (permanent or transient), duplicate deliveries and idempotency keys,
recovery before maintenance, and rollout messages."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from restarter import wiring
from restarter.domain.models import RestartRecord
from restarter.services import queued_restarts
from restarter.services.queued_restarts import QueuedMessage, QueuedMessageError
from restarter.services.restart_intake import accept_restart
from restarter_local.engine import LocalAws
from tests.conftest import load_event
from tests.integration.harness import Seed, failed_ids, handle, restarts_of


def sqs_record(body: Any, *, priority: str | None = None, message_id: str | None = None, **attributes: str) -> Any:
    """A record shaped like those of events/sqs_restart_batch.json."""
    text = body if isinstance(body, str) else json.dumps(body)
    if priority is not None:
        attributes["priority"] = priority
    record = copy.deepcopy(load_event("sqs_restart_batch.json")["Records"][0])
    record.update(
        messageId=message_id or str(uuid.uuid4()),
        body=text,
        md5OfBody=hashlib.md5(text.encode()).hexdigest(),
        messageAttributes={
            name: {"stringValue": value, "stringListValues": [], "binaryListValues": [], "dataType": "String"}
            for name, value in attributes.items()
        },
    )
    record.pop("md5OfMessageAttributes", None)
    return record


def sqs_event(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records)}


def refusals(aws: LocalAws, cluster_id: str) -> list[str]:
    assert aws.deps is not None
    return [
        e["details"]["error_code"]
        for e in aws.deps.audit.entries(cluster_id)
        if e["action"] == "restart.requested" and e["outcome"] == "refused"
    ]


@pytest.fixture
def logged() -> Iterator[list[logging.LogRecord]]:
    """Failure reports logged on the `restarter` logger (Powertools loggers do not propagate)."""
    records: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if hasattr(record, "failure"):  # the failure reports of the queue service
                records.append(record)

    handler = Capture(level=logging.DEBUG)
    target = logging.getLogger("restarter")
    target.addHandler(handler)
    try:
        yield records
    finally:
        target.removeHandler(handler)


# ---------------------------------------------------------------- batches


def test_given_a_batch_of_valid_messages_when_handled_then_one_restart_per_cluster_is_started(
    aws: LocalAws, seed: Seed
) -> None:
    # Given two clusters and the two valid messages of the sample batch
    seed()
    seed(id="cluster_def456", name="inference-cluster", instance_type="g5.xlarge", instance_count=1)
    event = load_event("sqs_restart_batch.json")
    event["Records"] = event["Records"][:2]

    # When the batch is handled
    response = handle(event)

    # Then nothing failed, and each cluster got one restart, triggered by the queue
    assert response == {"batchItemFailures": []}
    aws.wait_for_executions()
    for cluster_id, reason in (
        ("cluster_abc123", "Apply system updates"),
        ("cluster_def456", "Weekly maintenance window"),
    ):
        [record] = restarts_of(aws, cluster_id)
        assert record.trigger == "queue"
        assert record.requested_by == "queue:restarter-dev-maintenance"
        assert record.reason == reason
        assert record.status == "ready"
    assert len(aws.executions()) == 2


def test_given_a_batch_with_poison_messages_when_handled_then_only_they_are_reported_and_the_rest_runs(
    aws: LocalAws, seed: Seed
) -> None:
    # Given the sample batch: two valid messages, one with malformed JSON, one with an invalid field
    seed()
    seed(id="cluster_def456", name="inference-cluster", instance_type="g5.xlarge", instance_count=1)
    seed(id="cluster_ghi789", name="eval-cluster", instance_type="g5.xlarge", instance_count=1)
    event = load_event("sqs_restart_batch.json")
    records = event["Records"]

    # When it is handled
    response = handle(event)

    # Then exactly the two poison messages are reported, the others started their restarts
    assert failed_ids(response) == [records[2]["messageId"], records[3]["messageId"]]
    aws.wait_for_executions()
    assert len(restarts_of(aws, "cluster_abc123")) == 1
    assert len(restarts_of(aws, "cluster_def456")) == 1
    assert restarts_of(aws, "cluster_ghi789") == []
    # the invalid field was refused by the intake (audited); the malformed JSON never reached it
    assert refusals(aws, "cluster_ghi789") == ["VALIDATION_ERROR"]


def test_given_only_poison_messages_when_handled_then_all_are_reported_without_a_lambda_error(aws: LocalAws) -> None:
    event = load_event("sqs_restart_batch.json")
    event["Records"] = event["Records"][2:]

    response = handle(event)

    assert failed_ids(response) == [r["messageId"] for r in event["Records"]]


def test_given_an_unknown_cluster_when_handled_then_the_failure_is_reported_as_permanent(
    aws: LocalAws, seed: Seed, logged: list[logging.LogRecord]
) -> None:
    seed()
    unknown = sqs_record({"cluster_id": "cluster_nope"})
    known = sqs_record({"cluster_id": "cluster_abc123"})

    response = handle(sqs_event(unknown, known))

    assert failed_ids(response) == [unknown["messageId"]]
    assert refusals(aws, "cluster_nope") == ["NOT_FOUND"]
    [entry] = [r for r in logged if getattr(r, "message_id", None) == unknown["messageId"]]
    assert (entry.levelname, entry.error_code, entry.failure) == ("ERROR", "NOT_FOUND", "permanent")  # type: ignore[attr-defined]
    assert entry.visible_again_in_seconds == 0  # type: ignore[attr-defined]


def test_given_a_busy_cluster_when_handled_then_the_failure_is_transient_and_a_later_delivery_restarts(
    aws: LocalAws, seed: Seed, logged: list[logging.LogRecord]
) -> None:
    # Given a cluster with a restart in flight (held in starting_services until released)
    cluster = seed()
    assert aws.deps is not None
    aws.agent.set_never_healthy(cluster.instance_ids[0])
    first = accept_restart(aws.deps, cluster.id, {}, trigger="cli", requested_by="ops@example.com")
    record = sqs_record({"cluster_id": cluster.id, "restart_reason": "Rotate drivers"})

    # When a queued restart for it arrives
    response = handle(sqs_event(record))

    # Then it is reported (it returns to the queue), as a transient failure with a backoff
    assert failed_ids(response) == [record["messageId"]]
    assert refusals(aws, cluster.id) == ["INVALID_STATE"]
    [entry] = [r for r in logged if getattr(r, "message_id", None) == record["messageId"]]
    assert (entry.levelname, entry.error_code, entry.failure) == ("WARNING", "INVALID_STATE", "transient")  # type: ignore[attr-defined]
    assert entry.visible_again_in_seconds == 30  # type: ignore[attr-defined]

    # and when it is delivered again after the first restart ended, it restarts the cluster
    assert first.execution_arn is not None
    aws.agent.clear_never_healthy(cluster.instance_ids[0])
    aws.wait_for_execution(first.execution_arn)
    record["attributes"]["ApproximateReceiveCount"] = "2"
    assert handle(sqs_event(record)) == {"batchItemFailures": []}
    aws.wait_for_executions()
    assert [r.reason for r in restarts_of(aws, cluster.id)] == ["Rotate drivers", None]


def test_given_the_same_message_delivered_twice_when_handled_then_the_cluster_restarts_once(
    aws: LocalAws, seed: Seed
) -> None:
    cluster = seed()
    record = sqs_record({"cluster_id": cluster.id, "restart_reason": "Apply system updates"})

    assert handle(sqs_event(record)) == {"batchItemFailures": []}
    redelivered = {**record, "receiptHandle": "AQEBredelivered", "attributes": {**record["attributes"]}}
    redelivered["attributes"]["ApproximateReceiveCount"] = "2"
    assert handle(sqs_event(redelivered)) == {"batchItemFailures": []}

    aws.wait_for_executions()
    assert len(restarts_of(aws, cluster.id)) == 1
    assert len(aws.executions()) == 1
    # the message-id guard holds the first delivery's result
    assert aws.settings is not None
    items = aws.client("dynamodb").scan(TableName=aws.settings.idempotency_table)["Items"]
    by_message = [i for i in items if i["id"]["S"].startswith("restarter.queue.message#")]
    assert len(by_message) == 1 and by_message[0]["status"]["S"] == "COMPLETED"


def test_given_the_same_idempotency_key_in_two_messages_when_handled_then_the_cluster_restarts_once(
    aws: LocalAws, seed: Seed
) -> None:
    # the key as a message attribute in one message, as a body field in the other
    cluster = seed()
    body = {"cluster_id": cluster.id, "restart_reason": "Kernel patch"}
    first = sqs_record(body, idempotency_key="patch-2025-06-11")
    second = sqs_record({**body, "idempotency_key": "patch-2025-06-11"})

    assert handle(sqs_event(first)) == {"batchItemFailures": []}
    assert handle(sqs_event(second)) == {"batchItemFailures": []}

    aws.wait_for_executions()
    assert len(restarts_of(aws, cluster.id)) == 1


def test_given_the_same_request_without_a_key_in_two_messages_when_handled_then_the_cluster_restarts_once(
    aws: LocalAws, seed: Seed
) -> None:
    # two producers ask for the same restart in the same batch: the {cluster_id, request} hash
    cluster = seed()
    body = {"cluster_id": cluster.id, "restart_reason": "Nightly restart", "grace_period_minutes": 10}

    response = handle(sqs_event(sqs_record(body), sqs_record(body)))

    assert response == {"batchItemFailures": []}
    aws.wait_for_executions()
    assert len(restarts_of(aws, cluster.id)) == 1


def test_given_an_idempotency_key_reused_with_another_request_when_handled_then_it_is_refused(
    aws: LocalAws, seed: Seed
) -> None:
    cluster = seed()
    first = sqs_record({"cluster_id": cluster.id, "restart_reason": "a"}, idempotency_key="k-1")
    second = sqs_record({"cluster_id": cluster.id, "restart_reason": "b"}, idempotency_key="k-1")

    response = handle(sqs_event(first, second))

    assert failed_ids(response) == [second["messageId"]]
    aws.wait_for_executions()
    assert len(restarts_of(aws, cluster.id)) == 1


def test_given_a_mixed_batch_when_handled_then_recovery_messages_are_processed_first(
    aws: LocalAws, seed: Seed, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given four clusters and a batch where recovery messages are the 2nd and the 4th
    for cluster_id in ("cluster_abc123", "cluster_def456", "cluster_ghi789", "cluster_jkl012"):
        seed(id=cluster_id, name=cluster_id.removeprefix("cluster_"), instance_type="g5.xlarge", instance_count=1)
    intake_order: list[str] = []
    accept = accept_restart

    def recording_accept(deps: Any, cluster_id: str, payload: Any, **kwargs: Any) -> RestartRecord:
        intake_order.append(cluster_id)
        return accept(deps, cluster_id, payload, **kwargs)

    monkeypatch.setattr(queued_restarts, "accept_restart", recording_accept)

    # When it is handled
    response = handle(load_event("sqs_restart_recovery_priority.json"))

    # Then recovery went first, and otherwise the queue's order was kept
    assert response == {"batchItemFailures": []}
    assert intake_order == ["cluster_def456", "cluster_jkl012", "cluster_abc123", "cluster_ghi789"]
    aws.wait_for_executions()
    started = {cid: restarts_of(aws, cid)[0].restart_initiated_at for cid in intake_order}
    assert started["cluster_def456"] <= started["cluster_abc123"]
    assert started["cluster_jkl012"] <= started["cluster_ghi789"]


QUEUED_ROLLOUT = {
    "maintenance_window": {"id": "driver-535"},
    "cluster_ids": ["cluster_abc123", "cluster_def456"],
    "request": {"apply_system_updates": True},
    "max_concurrency": 2,
}


def test_given_a_rollout_message_when_handled_then_its_rollout_runs_once(aws: LocalAws, seed: Seed) -> None:
    seed()
    seed(id="cluster_def456", name="eval-cluster", instance_count=1, tenant_id="globex")
    first = sqs_record({"rollout": QUEUED_ROLLOUT})
    # another producer sends the same rollout (a different message)
    same = sqs_record({"rollout": QUEUED_ROLLOUT})

    response = handle(sqs_event(first, same))

    # Then both succeed, one rollout covers both clusters (an operator's rollout spans tenants)
    assert response == {"batchItemFailures": []}
    [execution] = aws.rollout_executions()
    aws.wait_for_rollouts()
    assert aws.deps is not None
    for cluster_id in ("cluster_abc123", "cluster_def456"):
        [restart] = restarts_of(aws, cluster_id)
        assert restart.trigger == "queue" and restart.status == "ready"
    assert execution["status"] in ("RUNNING", "SUCCEEDED")


def test_given_an_invalid_rollout_message_when_handled_then_it_fails_permanently_with_the_field(
    aws: LocalAws, seed: Seed, logged: list[logging.LogRecord]
) -> None:
    seed()
    rollout = sqs_record({"rollout": {**QUEUED_ROLLOUT, "max_concurrency": 0}})

    response = handle(sqs_event(rollout))

    assert failed_ids(response) == [rollout["messageId"]]
    [entry] = [r for r in logged if getattr(r, "message_id", None) == rollout["messageId"]]
    assert entry.error_code == "VALIDATION_ERROR"  # type: ignore[attr-defined]
    assert entry.failure == "permanent"  # type: ignore[attr-defined]
    assert aws.rollout_executions() == []


def test_given_a_rollout_message_with_an_unknown_cluster_then_the_error_is_permanent(aws: LocalAws) -> None:
    assert aws.deps is not None
    message = QueuedMessage(
        message_id=str(uuid.uuid4()),
        body=json.dumps({"rollout": {**QUEUED_ROLLOUT, "cluster_ids": ["cluster_nowhere"]}}),
        queue_name="restarter-dev-maintenance",
        queue_url="https://sqs.us-east-1.amazonaws.com/123456789012/restarter-dev-maintenance",
        receipt_handle="AQEBx",
    )
    with pytest.raises(QueuedMessageError) as caught:
        queued_restarts.process_message(wiring.get_queue_dependencies(), message)
    assert caught.value.permanent is True and caught.value.code == "NOT_FOUND"
