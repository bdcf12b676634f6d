"""The fleet circuit breaker's state in the RecoveryTable: a round trip, and the optimistic write
that lets only one of two concurrent decisions on the same state win."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from botocore.exceptions import ClientError

from restarter.adapters.breaker_store import BreakerStore
from restarter.adapters.recovery_store import RecoveryStore
from restarter.domain.circuit_breaker import BreakerState, PausedRecovery
from restarter.domain.errors import ProviderError, TransientProviderError
from restarter.domain.recovery import RecoveryEntry
from restarter_local.engine import LocalAws

NOW = "2026-01-05T09:00:00Z"


@pytest.fixture
def breakers(aws: LocalAws, recovery: RecoveryStore) -> BreakerStore:
    return BreakerStore(aws.client("dynamodb"), recovery.table)


def open_state(tenant_id: str = "t1") -> BreakerState:
    return BreakerState(
        tenant_id=tenant_id,
        state="open",
        opened_at=NOW,
        opened_reason="3 of 5 clusters of tenant t1 would be in recovery within 10 minutes (limit 2)",
        recovering_clusters=["c1", "c2"],
        total_clusters=5,
        limit=2,
        paused=[PausedRecovery(cluster_id="c3", event_id="evt-c3", alarm_name="gpu-xid-c3", paused_at=NOW)],
    )


def test_given_no_state_when_read_then_there_is_none(breakers: BreakerStore) -> None:
    assert breakers.get("t1") is None


def test_given_a_state_written_when_read_back_then_it_is_the_same_at_version_one(
    aws: LocalAws, breakers: BreakerStore, recovery: RecoveryStore
) -> None:
    # when the first state of t1 is written
    assert breakers.put(open_state(), expected_version=None) is True

    # then it reads back whole, at version 1, and only for t1
    stored = breakers.get("t1")
    assert stored is not None
    assert stored == open_state().model_copy(update={"version": 1})
    assert stored.paused[0].event_id == "evt-c3"
    assert breakers.get("t2") is None
    # in its own partition of the RecoveryTable, with the version as a number
    item = aws.client("dynamodb").get_item(
        TableName=recovery.table, Key={"cluster_id": {"S": "breaker#t1"}, "recovered_at": {"S": "state"}}
    )["Item"]
    assert item["version"] == {"N": "1"}
    # which a cluster's history never meets, even a cluster named like the tenant
    recovery.record(
        RecoveryEntry(
            cluster_id="t1", recovered_at=NOW, alarm_name="a", strategy="restart", restart_id="r1", event_id="e1"
        )
    )
    assert [e.restart_id for e in recovery.history("t1", datetime(2026, 1, 1, tzinfo=UTC))] == ["r1"]


def test_given_a_stored_state_when_written_on_its_version_then_the_version_moves_on(breakers: BreakerStore) -> None:
    assert breakers.put(open_state(), expected_version=None)
    stored = breakers.get("t1")
    assert stored is not None

    closed = stored.model_copy(update={"state": "closed", "closed_by": "ops@example.com", "paused": []})
    assert breakers.put(closed, expected_version=stored.version) is True

    again = breakers.get("t1")
    assert again is not None
    assert (again.state, again.closed_by, again.paused, again.version) == ("closed", "ops@example.com", [], 2)


def test_given_two_writers_on_the_same_version_when_both_write_then_only_the_first_wins(
    breakers: BreakerStore,
) -> None:
    # given a stored state both writers read
    assert breakers.put(open_state(), expected_version=None)
    read = breakers.get("t1")
    assert read is not None

    # when both write on version 1
    first = breakers.put(read.model_copy(update={"closed_by": "first"}), expected_version=read.version)
    second = breakers.put(read.model_copy(update={"closed_by": "second"}), expected_version=read.version)

    # then the second is told it lost, and the first's state stands
    assert (first, second) == (True, False)
    stored = breakers.get("t1")
    assert stored is not None
    assert (stored.closed_by, stored.version) == ("first", 2)


def test_given_a_stored_state_when_written_as_if_new_then_it_is_a_conflict(breakers: BreakerStore) -> None:
    assert breakers.put(open_state(), expected_version=None)

    assert breakers.put(open_state().model_copy(update={"state": "closed"}), expected_version=None) is False
    stored = breakers.get("t1")
    assert stored is not None
    assert (stored.state, stored.version) == ("open", 1)


def test_given_no_state_when_written_on_a_version_then_it_is_a_conflict(breakers: BreakerStore) -> None:
    assert breakers.put(open_state(), expected_version=3) is False
    assert breakers.get("t1") is None


def test_dynamodb_errors_other_than_a_lost_race_become_provider_errors(
    aws: LocalAws, recovery: RecoveryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = aws.client("dynamodb")
    missing = BreakerStore(client, "no-such-table")
    with pytest.raises(ProviderError) as not_found:
        missing.put(open_state(), expected_version=None)
    assert not_found.value.details["aws_error_code"] == "ResourceNotFoundException"
    with pytest.raises(ProviderError):
        missing.get("t1")

    def throttled(**_: object) -> None:
        raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"}}, "PutItem")

    store = BreakerStore(client, recovery.table)
    monkeypatch.setattr(client, "put_item", throttled)
    with pytest.raises(TransientProviderError):
        store.put(open_state(), expected_version=None)
