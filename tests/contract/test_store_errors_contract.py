"""The DynamoDB stores' guarded writes, won and lost, and their error translation, with the error
codes DynamoDB's real model declares for each operation (a code an operation never returns would
test nothing). Also the API key store and the Powertools idempotency layer over our client.

A lost condition is an answer, not an error: each store says what it means (a ConflictError, False,
the standing claim). Throttling is a TransientProviderError (the caller's retry fixes it), a
missing table a ProviderError; both name the AWS error code in `details["aws_error_code"]`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from botocore.stub import Stubber

from restarter.adapters.api_keys import ApiKeyStore
from restarter.adapters.breaker_store import BreakerStore
from restarter.adapters.health_store import HealthReportStore
from restarter.adapters.recovery_store import RecoveryStore
from restarter.adapters.rollout_store import RolloutStore
from restarter.adapters.store import AuditLog, ClusterLock, ClusterStore, RestartStore
from restarter.domain.errors import ConflictError, InvalidStateError, ProviderError, TransientProviderError
from tests.contract import dynamodb_stubs as ddb
from tests.contract.dynamodb_stubs import NOW, STAMP, Call, get_item, put_item, stub_clients

CCF = "ConditionalCheckFailedException"
TRANSIENT = ("ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded")
LEASE = timedelta(minutes=5)


@pytest.fixture
def stubbed() -> Iterator[Callable[[str], tuple[Any, Stubber]]]:
    yield from stub_clients()


# ---------------------------------------------------------------- guarded writes, won and lost

CLAIM = put_item(
    "Recovery",
    {
        **ddb.CLAIM_KEY,
        **{
            "claimed_at": {"S": STAMP},
            "claim_state": {"S": "in_progress"},
            "lease_until": {"S": "2026-01-05T09:05:00Z"},
        },
        "expires_at_epoch": {"N": str(int(NOW.timestamp()) + 7 * ddb.DAY)},
        **{"for_cluster_id": {"S": "cls_a1"}, "alarm_name": {"S": "gpu-xid-cls_a1"}},
    },
    ConditionExpression="attribute_not_exists(cluster_id) OR (#state = :in_progress AND #lease < :now)",
    ExpressionAttributeNames={"#state": "claim_state", "#lease": "lease_until"},
    ExpressionAttributeValues={":in_progress": {"S": "in_progress"}, ":now": {"S": STAMP}},
    ReturnValuesOnConditionCheckFailure="ALL_OLD",
)
LOCK_EXPIRES = NOW.replace(hour=11)
ACQUIRE = put_item(
    "Locks",
    {
        **ddb.LOCK_KEY,
        **{"owner": {"S": "rst_0a1b2c"}, "acquired_at": {"S": STAMP}, "expires_at": {"S": "2026-01-05T11:00:00Z"}},
        "expires_at_epoch": {"N": str(int(LOCK_EXPIRES.timestamp()))},
    },
    ConditionExpression="attribute_not_exists(lock_id) OR expires_at_epoch < :now",
    ExpressionAttributeValues={":now": {"N": str(int(NOW.timestamp()))}},
)
RELEASE: Call = (
    "delete_item",
    {
        **{"TableName": "Locks", "Key": ddb.LOCK_KEY, "ConditionExpression": "#o = :owner"},
        **{"ExpressionAttributeNames": {"#o": "owner"}, "ExpressionAttributeValues": {":owner": {"S": "rst_0a1b2c"}}},
    },
    {},
)
CLEAR: Call = (
    "delete_item",
    {"TableName": "Health", "Key": ddb.CHECK_KEY, "ConditionExpression": "check_id = :id"}
    | {"ExpressionAttributeValues": {":id": {"S": "chk_1"}}},
    {},
)
BREAKER_ON_3 = {
    "ConditionExpression": "#version = :expected",
    "ExpressionAttributeNames": {"#version": "version"},
    "ExpressionAttributeValues": {":expected": {"N": "3"}},
}


@dataclass(frozen=True)
class Guarded:
    run: Callable[[Any], Any]
    write: Call
    won: Any
    lost: Any  # the answer, or the exception type (its details in `lost_details`)
    lost_details: dict[str, Any] | None = None


NEW = {"ConditionExpression": "attribute_not_exists(restart_id)"}
GUARDED: dict[str, Guarded] = {
    "RestartStore.put(new)": Guarded(
        lambda c: RestartStore(c, "Restarts").put(ddb.restart_record(), None),
        put_item("Restarts", ddb.restart_item(ddb.restart_record(), 1), **NEW),
        1,
        ConflictError,
        {"restart_id": "rst_0a1b2c"},
    ),
    "RestartStore.put(on version)": Guarded(
        lambda c: RestartStore(c, "Restarts").put(ddb.restart_record(), 4),
        put_item("Restarts", ddb.restart_item(ddb.restart_record(), 5), **ddb.versioned(4)),
        5,
        ConflictError,
        {"restart_id": "rst_0a1b2c"},
    ),
    "RolloutStore.put(new)": Guarded(
        lambda c: RolloutStore(c, "Rollouts").put(ddb.rollout_record(), None),
        put_item(
            "Rollouts",
            ddb.rollout_item(ddb.rollout_record(), 1),
            ConditionExpression="attribute_not_exists(rollout_id)",
        ),
        1,
        ConflictError,
        {"rollout_id": "rol_0a1b2c"},
    ),
    "RolloutStore.put(on version)": Guarded(
        lambda c: RolloutStore(c, "Rollouts").put(ddb.rollout_record(), 2),
        put_item("Rollouts", ddb.rollout_item(ddb.rollout_record(), 3), **ddb.versioned(2)),
        3,
        ConflictError,
        {"rollout_id": "rol_0a1b2c"},
    ),
    "BreakerStore.put(new)": Guarded(
        lambda c: BreakerStore(c, "Recovery").put(ddb.BREAKER, None),
        put_item("Recovery", ddb.breaker_item(1), ConditionExpression="attribute_not_exists(cluster_id)"),
        True,
        False,
    ),
    "BreakerStore.put(on version)": Guarded(
        lambda c: BreakerStore(c, "Recovery").put(ddb.BREAKER, 3),
        put_item("Recovery", ddb.breaker_item(4), **BREAKER_ON_3),
        True,
        False,
    ),
    "HealthReportStore.put_pending": Guarded(
        lambda c: HealthReportStore(c, "Health").put_pending(ddb.PENDING),
        put_item("Health", ddb.CHECK_ITEM, ConditionExpression="attribute_not_exists(cluster_id)"),
        True,
        False,
    ),
    "HealthReportStore.clear_pending": Guarded(
        lambda c: HealthReportStore(c, "Health").clear_pending("cls_a1", "chk_1") or "cleared",
        CLEAR,
        "cleared",
        "cleared",
    ),
    "ClusterLock.release": Guarded(
        lambda c: ClusterLock(c, "Locks").release("cls_a1", "rst_0a1b2c"), RELEASE, True, False
    ),
    "RecoveryStore.claim_event(no old item)": Guarded(
        lambda c: RecoveryStore(c, "Recovery").claim_event(
            "evt-1", NOW, LEASE, cluster_id="cls_a1", alarm_name="gpu-xid-cls_a1"
        ),
        CLAIM,
        None,
        "done",
    ),
}


@pytest.mark.parametrize("case", GUARDED.values(), ids=GUARDED.keys())
def test_given_the_condition_holds_when_the_guarded_write_runs_then_it_is_written_as_asked(
    stubbed: Any, case: Guarded
) -> None:
    client, stubber = stubbed("dynamodb")
    stubber.add_response(case.write[0], {}, case.write[1])

    assert case.run(client) == case.won
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize("case", GUARDED.values(), ids=GUARDED.keys())
def test_given_the_condition_fails_when_the_guarded_write_runs_then_the_store_answers_what_it_means(
    stubbed: Any, case: Guarded
) -> None:
    client, stubber = stubbed("dynamodb")
    ddb.add_error(client, stubber, case.write, CCF)

    if isinstance(case.lost, type):
        with pytest.raises(case.lost) as raised:
            case.run(client)
        assert raised.value.details == case.lost_details
    else:
        assert case.run(client) == case.lost
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize(("standing", "answer"), [("in_progress", "in_progress"), ("done", "done"), (None, "done")])
def test_given_a_standing_claim_when_an_event_is_claimed_again_then_its_state_comes_from_all_old(
    stubbed: Any, standing: str | None, answer: str
) -> None:
    # given DynamoDB returns the standing claim with the failed condition (ALL_OLD); an old claim has no state
    client, stubber = stubbed("dynamodb")
    old = {**ddb.CLAIM_KEY, "claimed_at": {"S": STAMP}, **({"claim_state": {"S": standing}} if standing else {})}
    ddb.add_error(client, stubber, CLAIM, CCF, Item=old)

    # when the event is claimed again, then the answer is the standing claim's state
    claimed = RecoveryStore(client, "Recovery").claim_event(
        "evt-1", NOW, LEASE, cluster_id="cls_a1", alarm_name="gpu-xid-cls_a1"
    )

    assert claimed == answer
    stubber.assert_no_pending_responses()


def test_given_a_free_lock_when_acquired_then_the_put_is_guarded_by_absence_or_expiry(stubbed: Any) -> None:
    client, stubber = stubbed("dynamodb")
    stubber.add_response("put_item", {}, ACQUIRE[1])

    ClusterLock(client, "Locks").acquire("cls_a1", "rst_0a1b2c", NOW, LOCK_EXPIRES)

    stubber.assert_no_pending_responses()


def test_given_a_held_lock_when_acquired_then_the_holder_is_read_and_named_in_an_invalid_state(stubbed: Any) -> None:
    client, stubber = stubbed("dynamodb")
    ddb.add_error(client, stubber, ACQUIRE, CCF)
    holder = get_item("Locks", ddb.LOCK_KEY, {**ddb.LOCK_KEY, "owner": {"S": "rst_other"}})
    stubber.add_response(holder[0], holder[2], holder[1])

    with pytest.raises(InvalidStateError) as raised:
        ClusterLock(client, "Locks").acquire("cls_a1", "rst_0a1b2c", NOW, LOCK_EXPIRES)

    assert (raised.value.details["restart_id"], raised.value.details["current_status"]) == ("rst_other", "restarting")
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize("races_lost", [1, 12])
def test_given_writers_racing_when_a_restart_is_updated_then_it_rereads_until_it_wins_or_gives_up(
    stubbed: Any, monkeypatch: pytest.MonkeyPatch, races_lost: int
) -> None:
    client, stubber = stubbed("dynamodb")
    monkeypatch.setattr("restarter.adapters.store.time.sleep", lambda _: None)
    for version in range(4, 4 + races_lost):
        read = get_item("Restarts", ddb.RESTART_KEY, ddb.restart_item(ddb.restart_record(), version))
        stubber.add_response(read[0], read[2], read[1])
        ddb.add_error(
            client,
            stubber,
            put_item(
                "Restarts", ddb.restart_item(ddb.restart_record(status="ready"), version + 1), **ddb.versioned(version)
            ),
            CCF,
        )
    last = 4 + races_lost
    if races_lost < 12:  # the attempt after the lost races wins
        read = get_item("Restarts", ddb.RESTART_KEY, ddb.restart_item(ddb.restart_record(), last))
        stubber.add_response(read[0], read[2], read[1])
        write = put_item(
            "Restarts", ddb.restart_item(ddb.restart_record(status="ready"), last + 1), **ddb.versioned(last)
        )
        stubber.add_response(write[0], {}, write[1])

    if races_lost < 12:
        assert RestartStore(client, "Restarts").update("rst_0a1b2c", ddb.set_ready).status == "ready"
    else:
        with pytest.raises(ConflictError, match="too busy"):
            RestartStore(client, "Restarts").update("rst_0a1b2c", ddb.set_ready)
    stubber.assert_no_pending_responses()


# ---------------------------------------------------------------- error translation

EVERY_CALL: dict[str, tuple[Callable[[Any], Any], str]] = {
    "ClusterStore.get": (lambda c: ClusterStore(c, "T").get("cls_a1"), "get_item"),
    "ClusterStore.put": (lambda c: ClusterStore(c, "T").put(ddb.CLUSTER), "put_item"),
    "ClusterStore.list_all": (lambda c: ClusterStore(c, "T").list_all(), "scan"),
    "RestartStore.get": (lambda c: RestartStore(c, "T").get("rst_0a1b2c"), "get_item"),
    "RestartStore.put": (lambda c: RestartStore(c, "T").put(ddb.restart_record(), 1), "put_item"),
    "RestartStore.list_for_cluster": (lambda c: RestartStore(c, "T").list_for_cluster("cls_a1"), "query"),
    "RolloutStore.get": (lambda c: RolloutStore(c, "T").get("rol_0a1b2c"), "get_item"),
    "RolloutStore.put": (lambda c: RolloutStore(c, "T").put(ddb.rollout_record(), None), "put_item"),
    "ClusterLock.acquire": (lambda c: ClusterLock(c, "T").acquire("cls_a1", "rst_1", NOW, LOCK_EXPIRES), "put_item"),
    "ClusterLock.release": (lambda c: ClusterLock(c, "T").release("cls_a1", "rst_1"), "delete_item"),
    "ClusterLock.holder": (lambda c: ClusterLock(c, "T").holder("cls_a1"), "get_item"),
    "AuditLog.record": (lambda c: AuditLog(c, "T").record("cls_a1", "a", "b", "c", NOW), "put_item"),
    "AuditLog.entries": (lambda c: AuditLog(c, "T").entries("cls_a1"), "query"),
    "RecoveryStore.claim_event": (lambda c: RecoveryStore(c, "T").claim_event("evt-1", NOW, LEASE), "put_item"),
    "RecoveryStore.finish_event": (lambda c: RecoveryStore(c, "T").finish_event("evt-1", NOW), "put_item"),
    "RecoveryStore.release_event": (lambda c: RecoveryStore(c, "T").release_event("evt-1"), "delete_item"),
    "RecoveryStore.record": (lambda c: RecoveryStore(c, "T").record(ddb.ENTRY), "put_item"),
    "RecoveryStore.history": (lambda c: RecoveryStore(c, "T").history("cls_a1", ddb.SINCE), "query"),
    "BreakerStore.get": (lambda c: BreakerStore(c, "T").get("t1"), "get_item"),
    "BreakerStore.put": (lambda c: BreakerStore(c, "T").put(ddb.BREAKER, 3), "put_item"),
    "HealthReportStore.put_report": (lambda c: HealthReportStore(c, "T").put_report(ddb.REPORT), "put_item"),
    "HealthReportStore.reports": (lambda c: HealthReportStore(c, "T").reports("cls_a1"), "query"),
    "HealthReportStore.report": (lambda c: HealthReportStore(c, "T").report("cls_a1", "i-1"), "get_item"),
    "HealthReportStore.put_pending": (lambda c: HealthReportStore(c, "T").put_pending(ddb.PENDING), "put_item"),
    "HealthReportStore.pending": (lambda c: HealthReportStore(c, "T").pending("cls_a1"), "get_item"),
    "HealthReportStore.clear_pending": (
        lambda c: HealthReportStore(c, "T").clear_pending("cls_a1", "c"),
        "delete_item",
    ),
    "ApiKeyStore.lookup": (lambda c: ApiKeyStore(c, "T").lookup(ddb.API_KEY), "get_item"),
    "ApiKeyStore.disable": (lambda c: ApiKeyStore(c, "T").disable("0a1b2c3d"), "scan"),
    "ApiKeyStore.put_known_key": (lambda c: ApiKeyStore(c, "T").put_known_key(ddb.API_KEY, "t1", ["read"]), "scan"),
    "ApiKeyStore.create_key": (lambda c: ApiKeyStore(c, "T").create_key("t1", ["read"], now=NOW), "scan"),
}
OPERATION = {
    "get_item": "GetItem",
    "put_item": "PutItem",
    "delete_item": "DeleteItem",
    "query": "Query",
    "scan": "Scan",
}


def _refused(stubbed: Any, name: str, code: str) -> pytest.ExceptionInfo[Exception]:
    run, method = EVERY_CALL[name]
    client, stubber = stubbed("dynamodb")
    ddb.add_error(client, stubber, method, code)
    with pytest.raises((ProviderError, TransientProviderError)) as raised:
        run(client)
    stubber.assert_no_pending_responses()
    assert raised.value.details["operation"] == f"dynamodb:{OPERATION[method]}"
    assert raised.value.details["aws_error_code"] == code
    return raised


@pytest.mark.parametrize("code", TRANSIENT)
@pytest.mark.parametrize("name", EVERY_CALL)
def test_given_dynamodb_throttles_when_any_store_call_runs_then_it_is_transient(
    stubbed: Any, name: str, code: str
) -> None:
    assert _refused(stubbed, name, code).type is TransientProviderError


@pytest.mark.parametrize("name", EVERY_CALL)
def test_given_a_missing_table_when_any_store_call_runs_then_it_is_a_provider_error_not_a_retry(
    stubbed: Any, name: str
) -> None:
    assert _refused(stubbed, name, "ResourceNotFoundException").type is ProviderError


def test_given_dynamodb_fails_internally_when_a_store_call_runs_then_it_is_transient(stubbed: Any) -> None:
    assert _refused(stubbed, "ClusterStore.get", "InternalServerError").type is TransientProviderError
