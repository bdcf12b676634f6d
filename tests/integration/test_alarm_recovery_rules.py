"""Recovery from alarms, the pure rules: strategy, escalation, cooldown, budget, mapping, the
recovery table's name, and the rule pattern that delivers only transitions into ALARM."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from restarter.domain.models import Cluster, ClusterSnapshot, ContainerSpec, format_time
from restarter.domain.recovery import (
    AlarmTransition,
    RecoveryEntry,
    RecoveryPolicy,
    budget_resets_at,
    choose_strategy,
    decide_recovery,
    escalate,
    latest_snapshot,
    map_by_dimensions,
    map_by_tags,
    policy_from_labels,
    recovery_request,
    within_cooldown,
)
from restarter.settings import Settings
from restarter_local.engine import LocalAws
from restarter_local.template import load_template
from tests.conftest import load_event
from tests.integration.harness import (
    DEFAULT_TABLE,
    INSTANCE_ID,
    TABLE_ENV,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


# ================================================================ pure rules


def entry(minutes_ago: float, strategy: str = "restart", restart_id: str = "rst_1") -> RecoveryEntry:
    return RecoveryEntry.model_validate(
        {
            "cluster_id": "cluster_abc123",
            "recovered_at": format_time(NOW - timedelta(minutes=minutes_ago)),
            "alarm_name": "ServerCpuTooHigh",
            "strategy": strategy,
            "restart_id": restart_id,
            "event_id": f"evt-{minutes_ago}",
        }
    )


def snapshot(snapshot_id: str, days_ago: int) -> ClusterSnapshot:
    return ClusterSnapshot(id=snapshot_id, name=snapshot_id, created_at=format_time(NOW - timedelta(days=days_ago)))


def cluster(**fields: Any) -> Cluster:
    values: dict[str, Any] = {
        "id": "cluster_abc123",
        "name": "ml-training-cluster",
        "region": "us-east-1",
        "instance_ids": [INSTANCE_ID],
        "instance_type": "p4d.24xlarge",
        "container": ContainerSpec(image="tensorone/pytorch:2.2-cuda12.1"),
        "template_image": "tensorone/pytorch:2.1-cuda12.1",
    }
    values.update(fields)
    return Cluster(**values)


def test_given_no_labels_when_policy_is_read_then_restart_30_minutes_3_per_day() -> None:
    assert policy_from_labels({}) == RecoveryPolicy("restart", timedelta(minutes=30), 3)


def test_given_recovery_labels_when_policy_is_read_then_they_are_used() -> None:
    policy = policy_from_labels(
        {
            "restarter:recovery": "rebuild",
            "restarter:recovery-cooldown-minutes": "0",
            "restarter:recovery-budget": "5",
        }
    )
    assert (policy.strategy, policy.cooldown, policy.budget, policy.problems) == ("rebuild", timedelta(0), 5, ())


def test_given_labels_that_are_not_understood_when_policy_is_read_then_defaults_are_used_and_named() -> None:
    policy = policy_from_labels(
        {
            "restarter:recovery": "reinstall",
            "restarter:recovery-cooldown-minutes": "soon",
            "restarter:recovery-budget": "-1",
        }
    )
    assert (policy.strategy, policy.cooldown, policy.budget) == ("restart", timedelta(minutes=30), 3)
    assert len(policy.problems) == 3


def test_given_the_ladder_when_escalating_then_one_step_up_and_rebuild_stays_rebuild() -> None:
    assert [escalate("restart"), escalate("restore_snapshot"), escalate("rebuild")] == [
        "restore_snapshot",
        "rebuild",
        "rebuild",
    ]


def test_given_no_history_when_deciding_then_the_policy_strategy_is_used() -> None:
    decision = decide_recovery(RecoveryPolicy(), [], NOW, previous_restart_status=None)
    assert (decision.action, decision.strategy, decision.escalated_from) == ("recover", "restart", None)


def test_given_a_previous_recovery_that_failed_when_deciding_then_it_escalates_one_step() -> None:
    policy = RecoveryPolicy(cooldown=timedelta(0))
    for status in ("failed", "timed_out", "rolled_back"):
        decision = decide_recovery(
            policy, [entry(120)], NOW, previous_restart_status=status, snapshots=[snapshot("snap_a", 1)]
        )
        assert (decision.strategy, decision.escalated_from) == ("restore_snapshot", "restart")
        assert decision.snapshot_id == "snap_a"
    ready = decide_recovery(policy, [entry(120)], NOW, previous_restart_status="ready")
    assert ready.strategy == "restart" and ready.escalated_from is None


def test_given_an_alarm_again_within_the_cooldown_when_deciding_then_it_escalates_but_not_after_it() -> None:
    policy = RecoveryPolicy()
    assert within_cooldown(entry(29), NOW, policy.cooldown)
    assert not within_cooldown(entry(30), NOW, policy.cooldown)
    assert not within_cooldown(entry(1), NOW, timedelta(0))
    soon = decide_recovery(policy, [entry(10)], NOW, previous_restart_status="ready", snapshots=[snapshot("s", 1)])
    assert soon.strategy == "restore_snapshot"
    assert soon.reasons == (f"alarm fired again within the cooldown after {entry(10).recovered_at}",)
    later = decide_recovery(policy, [entry(45)], NOW, previous_restart_status="ready")
    assert later.strategy == "restart"


def test_given_repeated_escalations_when_deciding_then_the_ladder_is_climbed_from_the_previous_strategy() -> None:
    history = [entry(20, "restart", "rst_1"), entry(10, "restore_snapshot", "rst_2")]
    decision = decide_recovery(RecoveryPolicy(), history, NOW, previous_restart_status="ready")
    assert (decision.strategy, decision.escalated_from) == ("rebuild", "restore_snapshot")
    top = decide_recovery(RecoveryPolicy(), [entry(5, "rebuild")], NOW, previous_restart_status="failed")
    assert (top.strategy, top.escalated_from) == ("rebuild", None)


def test_given_restore_snapshot_without_snapshots_when_choosing_then_it_becomes_rebuild() -> None:
    strategy, escalated_from, reasons = choose_strategy(
        RecoveryPolicy(strategy="restore_snapshot"), None, previous_failed=False, in_cooldown=False, has_snapshots=False
    )
    assert (strategy, escalated_from, reasons) == ("rebuild", "restore_snapshot", ["no snapshot to restore"])
    escalated = decide_recovery(
        RecoveryPolicy(cooldown=timedelta(0)), [entry(60)], NOW, previous_restart_status="failed", snapshots=[]
    )
    assert (escalated.strategy, escalated.escalated_from) == ("rebuild", "restart")


def test_given_the_budget_is_spent_in_24_hours_when_deciding_then_no_recovery_until_the_oldest_ages_out() -> None:
    history = [entry(60 * 23), entry(60 * 5), entry(60)]
    decision = decide_recovery(RecoveryPolicy(), history, NOW, previous_restart_status="ready")
    assert decision.action == "budget_exhausted" and decision.strategy is None
    assert decision.recoveries_in_window == 3
    assert decision.budget_resets_at == format_time(NOW + timedelta(hours=1))
    # a recovery older than 24 hours no longer counts
    aged = [entry(60 * 25), entry(60 * 5), entry(60 * 2)]
    assert decide_recovery(RecoveryPolicy(), aged, NOW, previous_restart_status="ready").action == "recover"
    # budget 0 disables alarm recovery
    zero = decide_recovery(RecoveryPolicy(budget=0), [], NOW, previous_restart_status=None)
    assert zero.action == "budget_exhausted" and budget_resets_at([], NOW, 0) is None


def test_given_snapshots_in_any_order_when_picking_then_the_latest_by_created_at_wins() -> None:
    snaps = [snapshot("snap_mid", 2), snapshot("snap_new", 1), snapshot("snap_old", 9)]
    latest = latest_snapshot(snaps)
    assert latest is not None and latest.id == "snap_new"
    assert latest_snapshot([]) is None


def test_given_each_strategy_when_building_the_request_then_it_is_the_seeds_body() -> None:
    c = cluster(snapshots=[snapshot("snap_old", 3), snapshot("snap_new", 1)])
    assert recovery_request("restart", c, NOW, "HighXid") == {
        "force": True,
        "wait_for_ready": True,
        "apply_system_updates": True,
        "restart_reason": "Error recovery - forced restart (alarm HighXid)",
    }
    restore = recovery_request("restore_snapshot", c, NOW, "HighXid")
    assert restore["restore_from_snapshot"] == "snap_new" and restore["force"] is True
    rebuild = recovery_request("rebuild", c, NOW, "HighXid")
    assert rebuild["update_docker_image"] == "tensorone/pytorch:2.1-cuda12.1"  # the template's, not the current
    assert rebuild["environment_updates"] == {"RECOVERY_MODE": "true", "RECOVERY_TIMESTAMP": "2026-03-01T12:00:00Z"}
    assert rebuild["force"] is True
    with pytest.raises(ValueError, match="needs a snapshot"):
        recovery_request("restore_snapshot", cluster(), NOW, "HighXid")


def test_given_dimensions_and_tags_when_mapping_then_cluster_id_wins_and_several_clusters_are_ambiguous() -> None:
    a = cluster(id="cluster_a", instance_ids=["i-0aaaaaaaaaaaaaaaa"])
    b = cluster(id="cluster_b", instance_ids=["i-0bbbbbbbbbbbbbbbb", "i-0cccccccccccccccc"])
    assert map_by_dimensions([{"ClusterId": "cluster_x", "InstanceId": "i-0aaaaaaaaaaaaaaaa"}], [a]).cluster_id == (
        "cluster_x"
    )
    by_instance = map_by_dimensions(
        [{"InstanceId": "i-0bbbbbbbbbbbbbbbb"}, {"InstanceId": "i-0cccccccccccccccc"}], [a, b]
    )
    assert (by_instance.cluster_id, by_instance.via) == ("cluster_b", "dimension:InstanceId")
    both = map_by_dimensions([{"InstanceId": "i-0aaaaaaaaaaaaaaaa"}, {"InstanceId": "i-0bbbbbbbbbbbbbbbb"}], [a, b])
    assert both.cluster_id is None and both.ambiguous and both.candidates == ("cluster_a", "cluster_b")
    assert map_by_dimensions([{"InstanceId": "i-0ddddddddddddddd0"}], [a, b]).cluster_id is None
    assert map_by_dimensions([{}]).via == "none"
    assert map_by_tags({"restarter:cluster": "cluster_a"}, "restarter:cluster").cluster_id == "cluster_a"
    assert map_by_tags({"team": "ml"}, "restarter:cluster").cluster_id is None


def test_given_state_pairs_when_checking_the_transition_then_only_into_alarm_acts() -> None:
    def transition(previous: str | None, state: str) -> AlarmTransition:
        return AlarmTransition("e", "a", None, state, previous)

    assert transition("OK", "ALARM").enters_alarm
    assert transition("INSUFFICIENT_DATA", "ALARM").enters_alarm
    assert transition(None, "ALARM").enters_alarm
    assert not transition("ALARM", "ALARM").enters_alarm
    assert not transition("ALARM", "OK").enters_alarm
    assert not transition("OK", "INSUFFICIENT_DATA").enters_alarm


def test_given_the_environment_when_naming_the_recovery_table_then_env_or_default() -> None:
    assert Settings.from_environment({}).recovery_table == DEFAULT_TABLE == "restarter-recovery"
    assert Settings.from_environment({TABLE_ENV: " "}).recovery_table == DEFAULT_TABLE
    assert Settings.from_environment({TABLE_ENV: "prod-recovery"}).recovery_table == "prod-recovery"


# ================================================================ the rule and its dead letters


def test_given_the_rule_pattern_when_alarm_events_are_matched_then_only_transitions_into_alarm_are_delivered(
    aws: LocalAws,
) -> None:
    resources = load_template()["Resources"]
    rule = resources["AlarmRecoveryFunction"]["Properties"]["Events"]["AlarmStateChange"]["Properties"]
    # the rule on the default bus, delivering to a queue in place of the function
    events, sqs = aws.client("events"), aws.client("sqs")
    queue_url = sqs.create_queue(QueueName="alarm-rule-capture")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="alarm-state-change", EventPattern=json.dumps(rule["Pattern"]))
    events.put_targets(Rule="alarm-state-change", Targets=[{"Id": "capture", "Arn": queue_arn}])

    def delivered(name: str) -> bool:
        sample = load_event(name)
        entry = {
            "Source": sample["source"],
            "DetailType": sample["detail-type"],
            "Detail": json.dumps(sample["detail"]),
            "Resources": sample["resources"],
        }
        assert events.put_events(Entries=[entry])["FailedEntryCount"] == 0
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        for message in messages:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        return len(messages) == 1

    # every alarm into ALARM, whatever its name or dimensions (a tag may map it to a cluster)
    assert delivered("alarm_state_change_instance.json")
    assert delivered("alarm_state_change_cluster_dimension.json")
    assert not delivered("alarm_state_change_ok.json")
    # failed deliveries are retried, then kept in the alarm DLQ, as are failed invocations
    assert rule["RetryPolicy"]["MaximumRetryAttempts"] > 0
    assert rule["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": "AlarmDeadLetterQueue.Arn"}}
    invoke = resources["AlarmRecoveryFunction"]["Properties"]["EventInvokeConfig"]
    assert invoke["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": "AlarmDeadLetterQueue.Arn"}
    [statement] = resources["AlarmDeadLetterQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"} and statement["Action"] == "sqs:SendMessage"
