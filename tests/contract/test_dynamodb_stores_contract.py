"""The DynamoDB stores against DynamoDB's real service model, offline.

moto accepts request shapes that DynamoDB refuses. botocore's `Stubber` sends nothing, yet every
request still goes through the client's validation against the service model, and every stubbed
answer is checked against the operation's output shape; `stub_clients` adds the limits botocore
leaves to the service (maximum lengths, enums, patterns), so a request that passes here is one
the real API parses. The conditional writes (won and lost), the API key store, the idempotency
layer and the error translation are in test_store_errors_contract.py; the helpers and records
here are shared with it and with test_messaging_contract.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from restarter.adapters.breaker_store import BreakerStore
from restarter.adapters.health_store import HealthReportStore
from restarter.adapters.recovery_store import RecoveryStore
from restarter.adapters.rollout_store import RolloutStore
from restarter.adapters.store import AuditLog, ClusterLock, ClusterStore, RestartStore
from tests.contract.dynamodb_stubs import (
    BREAKER,
    BREAKER_KEY,
    CHECK_ITEM,
    CHECK_KEY,
    CLAIM_KEY,
    CLUSTER,
    DAY,
    ENTRY,
    HISTORY_ITEM,
    INSTANCE,
    KEY_HASH,
    LOCK_KEY,
    NOW,
    PENDING,
    REGION,
    REPORT,
    REPORT_ITEM,
    REPORT_KEY,
    RESTART_KEY,
    ROLLOUT_KEY,
    SINCE,
    STAMP,
    Call,
    Matching,
    breaker_item,
    get_item,
    model_limit_violations,
    page,
    put_item,
    restart_item,
    restart_record,
    rollout_item,
    rollout_record,
    set_ready,
    stub_clients,
    versioned,
)


@pytest.fixture
def stubbed() -> Iterator[Callable[[str], tuple[Any, Stubber]]]:
    """The DynamoDB (and other) clients under a Stubber that checks the model's limits too."""
    yield from stub_clients()


def test_given_a_value_over_a_model_limit_when_checked_then_the_limit_is_named() -> None:
    """The limit check itself: without it a too-long execution name would pass here and fail in AWS."""
    sfn = boto3.client("stepfunctions", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    model = sfn.meta.service_model.operation_model("StartExecution")

    problems = model_limit_violations(model.input_shape, {"stateMachineArn": "arn", "name": "n" * 81})

    assert problems == [".name: 81 characters, at most 80"]


# ---------------------------------------------------------------- reads and plain writes


@dataclass(frozen=True)
class Case:
    run: Callable[[Any], Any]  # the adapter call, on the stubbed client
    calls: list[Call]
    result: Any


CLUSTER_ITEM = {"cluster_id": {"S": "cls_a1"}, "body": {"S": CLUSTER.model_dump_json()}}
OTHER_ITEM = {"cluster_id": {"S": "cls_b"}, "body": {"S": CLUSTER.model_copy(update={"id": "cls_b"}).model_dump_json()}}
CLUSTER_PUT = {**CLUSTER_ITEM, "tenant_id": {"S": "t1"}, "status": {"S": "running"}}
LAST_KEY = {"cluster_id": {"S": "cls_b"}}
HISTORY_QUERY = {
    "TableName": "Recovery",
    "KeyConditionExpression": "cluster_id = :c AND recovered_at >= :since",
    "ExpressionAttributeValues": {":c": {"S": "cls_a1"}, ":since": {"S": "2026-01-05T08:00:00Z"}},
    "ConsistentRead": True,
}
HISTORY_LAST = {"cluster_id": {"S": "cls_a1"}, "recovered_at": {"S": f"{STAMP}#evt-0"}}
HEALTH_QUERY = {**HISTORY_QUERY, "TableName": "Health", "KeyConditionExpression": "cluster_id = :c"}
HEALTH_QUERY["ExpressionAttributeValues"] = {":c": {"S": "cls_a1"}}
CLAIM_DONE = {
    "claim_state": {"S": "done"},
    "done_at": {"S": STAMP},
    "expires_at_epoch": {"N": str(int(NOW.timestamp()) + 7 * DAY)},
}
DISABLE = {
    "TableName": "ApiKeys",
    "Key": {"key_hash": {"S": KEY_HASH}},
    "UpdateExpression": "SET disabled = :t, disabled_at = :at",
    "ConditionExpression": "attribute_exists(key_hash)",
    "ExpressionAttributeValues": {":t": {"BOOL": True}, ":at": {"S": STAMP}},
}

CASES: dict[str, Case] = {
    "ClusterStore.get": Case(
        lambda c: ClusterStore(c, "Clusters").get("cls_a1"),
        [get_item("Clusters", {"cluster_id": {"S": "cls_a1"}}, CLUSTER_ITEM)],
        CLUSTER,
    ),
    "ClusterStore.get(missing)": Case(
        lambda c: ClusterStore(c, "Clusters").get("cls_a1"),
        [get_item("Clusters", {"cluster_id": {"S": "cls_a1"}}, None)],
        None,
    ),
    "ClusterStore.put": Case(
        lambda c: ClusterStore(c, "Clusters").put(CLUSTER), [put_item("Clusters", CLUSTER_PUT)], None
    ),
    "ClusterStore.list_all(two pages, sorted)": Case(
        lambda c: [cluster.id for cluster in ClusterStore(c, "Clusters").list_all()],
        [
            ("scan", {"TableName": "Clusters"}, page(OTHER_ITEM, LastEvaluatedKey=LAST_KEY)),
            ("scan", {"TableName": "Clusters", "ExclusiveStartKey": LAST_KEY}, page(CLUSTER_ITEM)),
        ],
        ["cls_a1", "cls_b"],
    ),
    "RestartStore.get": Case(
        lambda c: RestartStore(c, "Restarts").get("rst_0a1b2c"),
        [get_item("Restarts", RESTART_KEY, restart_item(restart_record(), 3))],
        (restart_record(), 3),
    ),
    "RestartStore.get(missing)": Case(
        lambda c: RestartStore(c, "Restarts").get("rst_0a1b2c"), [get_item("Restarts", RESTART_KEY, None)], None
    ),
    "RestartStore.update": Case(
        lambda c: RestartStore(c, "Restarts").update("rst_0a1b2c", set_ready).status,
        [
            get_item("Restarts", RESTART_KEY, restart_item(restart_record(), 4)),
            put_item("Restarts", restart_item(restart_record(status="ready"), 5), **versioned(4)),
        ],
        "ready",
    ),
    "RolloutStore.get": Case(
        lambda c: RolloutStore(c, "Rollouts").get("rol_0a1b2c"),
        [get_item("Rollouts", ROLLOUT_KEY, rollout_item(rollout_record(), 2))],
        (rollout_record(), 2),
    ),
    "RolloutStore.update": Case(
        lambda c: RolloutStore(c, "Rollouts").update("rol_0a1b2c", set_ready).status,
        [
            get_item("Rollouts", ROLLOUT_KEY, rollout_item(rollout_record(), 2)),
            put_item("Rollouts", rollout_item(rollout_record("completed"), 3), **versioned(2)),
        ],
        "completed",
    ),
    "ClusterLock.holder": Case(
        lambda c: ClusterLock(c, "Locks").holder("cls_a1"),
        [get_item("Locks", LOCK_KEY, {**LOCK_KEY, "owner": {"S": "rst_0a1b2c"}})],
        "rst_0a1b2c",
    ),
    "ClusterLock.holder(free)": Case(
        lambda c: ClusterLock(c, "Locks").holder("cls_a1"), [get_item("Locks", LOCK_KEY, None)], None
    ),
    "RecoveryStore.finish_event": Case(
        lambda c: RecoveryStore(c, "Recovery").finish_event("evt-1", NOW),
        [put_item("Recovery", {**CLAIM_KEY, **CLAIM_DONE})],
        None,
    ),
    "RecoveryStore.release_event": Case(
        lambda c: RecoveryStore(c, "Recovery").release_event("evt-1"),
        [("delete_item", {"TableName": "Recovery", "Key": CLAIM_KEY}, {})],
        None,
    ),
    "RecoveryStore.record": Case(
        lambda c: RecoveryStore(c, "Recovery").record(ENTRY), [put_item("Recovery", HISTORY_ITEM)], None
    ),
    "RecoveryStore.history(two pages)": Case(
        lambda c: RecoveryStore(c, "Recovery").history("cls_a1", SINCE),
        [
            ("query", HISTORY_QUERY, page(HISTORY_ITEM, LastEvaluatedKey=HISTORY_LAST)),
            ("query", {**HISTORY_QUERY, "ExclusiveStartKey": HISTORY_LAST}, page()),
        ],
        [ENTRY],
    ),
    "BreakerStore.get": Case(
        lambda c: BreakerStore(c, "Recovery").get("t1"),
        [get_item("Recovery", BREAKER_KEY, breaker_item(3))],
        BREAKER.model_copy(update={"version": 3}),
    ),
    "BreakerStore.get(never written)": Case(
        lambda c: BreakerStore(c, "Recovery").get("t1"), [get_item("Recovery", BREAKER_KEY, None)], None
    ),
    "HealthReportStore.put_report": Case(
        lambda c: HealthReportStore(c, "Health").put_report(REPORT), [put_item("Health", REPORT_ITEM)], None
    ),
    "HealthReportStore.reports(not the check)": Case(
        lambda c: HealthReportStore(c, "Health").reports("cls_a1"),
        [("query", HEALTH_QUERY, page(CHECK_ITEM, REPORT_ITEM))],
        [REPORT],
    ),
    "HealthReportStore.report": Case(
        lambda c: HealthReportStore(c, "Health").report("cls_a1", INSTANCE),
        [get_item("Health", REPORT_KEY, REPORT_ITEM)],
        REPORT,
    ),
    "HealthReportStore.pending": Case(
        lambda c: HealthReportStore(c, "Health").pending("cls_a1"), [get_item("Health", CHECK_KEY, CHECK_ITEM)], PENDING
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_given_realistic_answers_when_the_store_method_runs_then_each_request_fits_the_model_and_the_answer_is_read(
    stubbed: Any, case: Case
) -> None:
    # given the answers DynamoDB gives to exactly these requests
    client, stubber = stubbed("dynamodb")
    for method, request, answer in case.calls:
        stubber.add_response(method, answer, request)

    # when the adapter method runs
    result = case.run(client)

    # then it asked exactly that, in that order, and read the answer
    assert result == case.result
    stubber.assert_no_pending_responses()


def test_given_a_cluster_history_when_paged_then_the_token_is_the_start_key_of_the_next_query(stubbed: Any) -> None:
    client, stubber = stubbed("dynamodb")
    last = {"cluster_id": {"S": "cls_a1"}, "restart_id": {"S": "rst_b2"}, "restart_initiated_at": {"S": STAMP}}
    query = {
        "TableName": "Restarts",
        "IndexName": "by_cluster",
        "KeyConditionExpression": "cluster_id = :c",
        "ExpressionAttributeValues": {":c": {"S": "cls_a1"}},
        "ScanIndexForward": False,
        "Limit": 1,
    }
    stubber.add_response("query", page(restart_item(restart_record("rst_b2"), 1), LastEvaluatedKey=last), query)
    stubber.add_response("query", page(restart_item(restart_record("rst_a1"), 1)), {**query, "ExclusiveStartKey": last})
    store = RestartStore(client, "Restarts")

    first, token = store.list_for_cluster("cls_a1", limit=1)
    assert ([r.id for r in first], token is not None) == (["rst_b2"], True)
    second, end = store.list_for_cluster("cls_a1", limit=1, cursor=token)

    assert ([r.id for r in second], end) == (["rst_a1"], None)
    stubber.assert_no_pending_responses()


def test_given_an_action_when_recorded_and_listed_then_the_entry_round_trips(stubbed: Any) -> None:
    client, stubber = stubbed("dynamodb")
    item = {
        "entity_id": {"S": "cls_a1"},
        "recorded_at": {"S": Matching(r"2026-01-05T09:00:00Z#[0-9a-f]{8}")},  # a random suffix
        **{"action": {"S": "restart.requested"}, "actor": {"S": "key:0a1b2c3d"}, "outcome": {"S": "accepted"}},
        "details": {"S": json.dumps({"restart_id": "rst_0a1b2c"}, sort_keys=True)},
        "expires_at_epoch": {"N": str(int(NOW.timestamp()) + 400 * DAY)},
    }
    stubber.add_response("put_item", {}, {"TableName": "Audit", "Item": item})
    query = {"KeyConditionExpression": "entity_id = :e", "ExpressionAttributeValues": {":e": {"S": "cls_a1"}}}
    stored = {**item, "recorded_at": {"S": f"{STAMP}#a1b2c3d4"}}
    stubber.add_response("query", page(stored), {"TableName": "Audit", **query})
    audit = AuditLog(client, "Audit")

    audit.record("cls_a1", "restart.requested", "key:0a1b2c3d", "accepted", NOW, restart_id="rst_0a1b2c")
    entries = audit.entries("cls_a1")

    assert entries == [
        {
            **{"recorded_at": f"{STAMP}#a1b2c3d4", "action": "restart.requested", "actor": "key:0a1b2c3d"},
            **{"outcome": "accepted", "details": {"restart_id": "rst_0a1b2c"}},
        }
    ]
    stubber.assert_no_pending_responses()
