"""AlarmRecoveryFunction end to end, each transition recovers once: the same event or alarm action
delivered twice, one transition by both shapes, and the claim (in progress with a lease, then done)
when an invocation dies."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest

from restarter.adapters.recovery_store import RecoveryStore
from restarter.domain.errors import ConflictError
from restarter.services.alarm_recovery import CLAIM_LEASE
from restarter_local.engine import LocalAws
from restarter_local.template import load_template
from tests.conftest import load_event
from tests.integration.harness import (
    Seed,
    action_event,
    event,
    finished,
    seed_instance_cluster,
    send,
)


def test_given_the_same_event_delivered_twice_when_handled_then_the_cluster_recovers_once(
    aws: LocalAws, seed: Seed, recovery: RecoveryStore
) -> None:
    seed_instance_cluster(seed)

    first = send(event())
    second = send(event())

    assert first["action"] == "recovery_started"
    assert second["action"] == "duplicate"
    assert len(aws.executions()) == 1
    assert finished(aws, first["restart_id"]).status == "ready"


def test_given_the_same_alarm_action_delivered_twice_when_handled_then_the_cluster_recovers_once(
    aws: LocalAws, seed: Seed, recovery: RecoveryStore
) -> None:
    seed_instance_cluster(seed)

    first = send(action_event())
    second = send(action_event())

    assert first["action"] == "recovery_started"
    assert (second["action"], second["event_id"]) == ("duplicate", first["event_id"])
    assert len(aws.executions()) == 1
    assert finished(aws, first["restart_id"]).status == "ready"


def test_given_a_later_transition_of_the_same_alarm_when_its_action_fires_then_it_is_another_event(
    aws: LocalAws, seed: Seed, recovery: RecoveryStore
) -> None:
    seed_instance_cluster(seed)
    first = send(action_event())
    assert finished(aws, first["restart_id"]).status == "ready"

    later = send(action_event(timestamp="2019-10-02T18:10:00.123+0000"))

    assert later["action"] == "recovery_started"
    assert later["event_id"] != first["event_id"]
    assert len(aws.executions()) == 2


def test_given_one_transition_arrives_by_eventbridge_and_as_a_lambda_action_then_it_recovers_once(
    aws: LocalAws, seed: Seed, recovery: RecoveryStore
) -> None:
    seed_instance_cluster(seed)
    by_rule = event()
    by_action = copy.deepcopy(load_event("alarm_lambda_action_instance.json"))
    # the same alarm and the same transition, delivered both ways
    by_action["alarmArn"] = by_rule["resources"][0]
    by_action["alarmData"]["state"]["timestamp"] = by_rule["detail"]["state"]["timestamp"]

    first = send(by_rule)
    finished(aws, first["restart_id"])
    second = send(by_action)

    assert first["action"] == "recovery_started"
    assert (second["action"], second["event_id"]) == ("duplicate", first["event_id"])
    assert len(aws.executions()) == 1


# ================================================================ the claim: in progress with a lease, then done


class LambdaKilled(BaseException):
    """The invocation ends where it stands (a timeout, the sandbox lost): no except clause runs."""


def advance_past_the_lease(aws: LocalAws) -> None:
    aws.clock.advance("tests:lease", CLAIM_LEASE.total_seconds() + 1)


def test_given_an_invocation_that_died_holding_the_claim_when_the_event_comes_again_then_it_recovers_after_the_lease(
    aws: LocalAws, seed: Seed, recovery: RecoveryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = seed_instance_cluster(seed)

    def killed(*args: Any, **kwargs: Any) -> Any:
        raise LambdaKilled

    # Given an invocation that claimed the event and died before starting the restart
    with monkeypatch.context() as patched:
        patched.setattr("restarter.services.alarm_recovery._recover", killed)
        with pytest.raises(LambdaKilled):
            send(event())
    assert aws.executions() == []

    # When the event comes again within the claim's lease, Then it is neither handled nor lost:
    # it raises, so that Lambda retries it later
    with pytest.raises(ConflictError, match="another invocation"):
        send(event())
    assert aws.executions() == []

    # When it comes again after the lease, Then the cluster recovers, once
    advance_past_the_lease(aws)
    data = send(event())
    assert (data["action"], data["cluster_id"]) == ("recovery_started", cluster.id)
    assert finished(aws, data["restart_id"]).status == "ready"
    assert send(event())["action"] == "duplicate"
    assert len(aws.executions()) == 1


def test_given_an_event_handled_to_the_end_when_it_comes_again_after_the_lease_then_it_is_a_duplicate(
    aws: LocalAws, seed: Seed, recovery: RecoveryStore
) -> None:
    seed_instance_cluster(seed)
    first = send(event())
    finished(aws, first["restart_id"])

    advance_past_the_lease(aws)
    again = send(event())

    assert (again["action"], again["event_id"]) == ("duplicate", first["event_id"])
    assert len(aws.executions()) == 1


def test_given_an_invocation_that_died_after_starting_the_recovery_when_the_event_comes_again_then_no_second_restart(
    aws: LocalAws, seed: Seed, recovery: RecoveryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_instance_cluster(seed)

    def killed(*args: Any, **kwargs: Any) -> Any:
        raise LambdaKilled

    # Given an invocation that started and recorded the recovery, then died before marking it done
    with monkeypatch.context() as patched:
        patched.setattr(RecoveryStore, "finish_event", killed)
        with pytest.raises(LambdaKilled):
            send(event())
    assert len(aws.executions()) == 1

    # When the event comes again after the lease, Then the recorded recovery answers it
    advance_past_the_lease(aws)
    again = send(event())

    assert again["action"] == "duplicate"
    assert len(aws.executions()) == 1
    aws.wait_for_executions()


def test_given_the_function_timeout_when_sizing_the_lease_then_it_is_twice_the_timeout() -> None:
    function = load_template()["Resources"]["AlarmRecoveryFunction"]["Properties"]
    assert timedelta(seconds=2 * function["Timeout"]) == CLAIM_LEASE
