"""Recovery from alarms: the pure rules (strategy, escalation, cooldown, budget, mapping), then
AlarmRecoveryFunction end to end with real-shaped events from `events/` on the embedded AWS.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from restarter import wiring
from restarter.adapters.recovery_store import RecoveryStore
from restarter.domain.errors import ConflictError
from restarter.domain.models import Cluster, ClusterSnapshot, ContainerSpec, RestartRecord, format_time
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
from restarter.handlers import alarm as alarm_handler
from restarter.services.alarm_recovery import CLAIM_LEASE
from restarter.services.restart_intake import accept_restart
from restarter.settings import Settings
from restarter_local.engine import LocalAws
from restarter_local.lambdas import LocalLambdaContext
from restarter_local.template import load_template
from tests.conftest import load_event
from tests.integration.harness import EventCapture

Seed = Callable[..., Cluster]

INSTANCE_ID = "i-12345678901234567"  # the instance of events/alarm_state_change_instance.json
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TABLE_ENV = "RECOVERY_TABLE"  # the AlarmRecoveryFunction's variable
DEFAULT_TABLE = "restarter-recovery"


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


# ================================================================ AlarmRecoveryFunction end to end


@pytest.fixture
def recovery(aws: LocalAws, monkeypatch: pytest.MonkeyPatch) -> Iterator[RecoveryStore]:
    """The RecoveryTable: the engine's (once template.yaml declares it) or one created here."""
    name = aws.environment.get(TABLE_ENV) or os.environ.get(TABLE_ENV) or DEFAULT_TABLE
    monkeypatch.setenv(TABLE_ENV, name)
    dynamodb = aws.client("dynamodb")
    if name not in dynamodb.list_tables()["TableNames"]:
        dynamodb.create_table(
            TableName=name,
            AttributeDefinitions=[
                {"AttributeName": "cluster_id", "AttributeType": "S"},
                {"AttributeName": "recovered_at", "AttributeType": "S"},
            ],
            KeySchema=[
                {"AttributeName": "cluster_id", "KeyType": "HASH"},
                {"AttributeName": "recovered_at", "KeyType": "RANGE"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
    wiring.use_alarm_recovery(None)
    yield RecoveryStore(dynamodb, name)
    wiring.use_alarm_recovery(None)


def event(name: str = "alarm_state_change_instance.json", *, event_id: str | None = None, **detail: Any) -> Any:
    sample = copy.deepcopy(load_event(name))
    if event_id is not None:
        # another firing: a new event id and a new transition time (the transition's identity)
        sample["id"] = event_id
        seconds = int(hashlib.sha256(event_id.encode()).hexdigest(), 16) % 3600
        sample["detail"]["state"] = {
            **sample["detail"]["state"],
            "timestamp": f"2019-10-02T{17 + seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}.000+0000",
        }
    sample["detail"].update(detail)
    return sample


def send(payload: dict[str, Any]) -> dict[str, Any]:
    answer = alarm_handler.lambda_handler(payload, LocalLambdaContext("AlarmRecoveryFunction"))
    assert answer["success"] is True
    data: dict[str, Any] = answer["data"]
    return data


def restart(aws: LocalAws, restart_id: str) -> RestartRecord:
    assert aws.deps is not None
    stored = aws.deps.restarts.get(restart_id)
    assert stored is not None
    return stored[0]


def finished(aws: LocalAws, restart_id: str) -> RestartRecord:
    aws.wait_for_executions()
    return restart(aws, restart_id)


def alarm_audit(aws: LocalAws, entity_id: str) -> list[dict[str, Any]]:
    assert aws.deps is not None
    return [e for e in aws.deps.audit.entries(entity_id) if e["action"] == "alarm.state_changed"]


def seed_instance_cluster(seed: Seed, **overrides: Any) -> Cluster:
    return seed(instance_ids=[INSTANCE_ID], instance_count=1, **overrides)


def test_given_an_instance_mapped_cluster_when_its_alarm_goes_ok_to_alarm_then_a_forced_restart_ends_ready(
    aws: LocalAws, seed: Seed, recovery: RecoveryStore, published: EventCapture
) -> None:
    cluster = seed_instance_cluster(seed)
    sample = event()

    data = send(sample)

    assert data["action"] == "recovery_started"
    assert (data["cluster_id"], data["strategy"]) == (cluster.id, "restart")
    record = finished(aws, data["restart_id"])
    assert record.status == "ready"
    assert (record.trigger, record.restart_type, record.requested_by) == ("alarm", "force", "alarm:ServerCpuTooHigh")
    assert record.request["apply_system_updates"] is True
    assert record.reason == "Error recovery - forced restart (alarm ServerCpuTooHigh)"
    [stored] = recovery.history(cluster.id, aws.clock.now() - timedelta(hours=1))
    assert (stored.strategy, stored.restart_id, stored.alarm_name) == ("restart", record.id, "ServerCpuTooHigh")
    # the transition's id: from the alarm ARN and the state's timestamp, as for the Lambda action shape
    assert stored.event_id == alarm_handler.lambda_action_event_id(
        sample["resources"][0], sample["detail"]["state"]["timestamp"]
    )
    [audited] = alarm_audit(aws, cluster.id)
    assert audited["outcome"] == "recovery_started" and audited["details"]["mapped_by"] == "dimension:InstanceId"
    assert "Restart Requested" in [e["detail-type"] for e in published.drain()]


def test_given_an_alarm_going_back_to_ok_when_it_arrives_then_nothing_restarts_and_it_is_recorded(
    aws: LocalAws, seed: Seed, recovery: RecoveryStore
) -> None:
    cluster = seed_instance_cluster(seed)

    data = send(event("alarm_state_change_ok.json"))

    assert data["action"] == "ignored"
    assert data["reasons"] == ["transition ALARM -> OK is not into ALARM"]
    assert aws.executions() == []
    [audited] = alarm_audit(aws, cluster.id)
    assert (audited["outcome"], audited["details"]["state"], audited["details"]["previous_state"]) == (
        "ignored",
        "OK",
        "ALARM",
    )


def test_given_an_alarm_staying_in_alarm_when_it_arrives_then_nothing_restarts(
    aws: LocalAws, seed: Seed, recovery: RecoveryStore
) -> None:
    seed_instance_cluster(seed)
    sample = event(event_id="6a1f0c2e-0000-4000-8000-000000000001")
    sample["detail"]["previousState"]["value"] = "ALARM"

    assert send(sample)["action"] == "ignored"
    assert aws.executions() == []


def test_given_a_cluster_id_dimension_when_the_alarm_fires_then_that_cluster_recovers(
    aws: LocalAws, seed: Seed, recovery: RecoveryStore
) -> None:
    cluster = seed()  # cluster_abc123, two instances with random ids

    data = send(event("alarm_state_change_cluster_dimension.json"))

    assert (data["action"], data["cluster_id"]) == ("recovery_started", cluster.id)
    assert finished(aws, data["restart_id"]).status == "ready"
    assert alarm_audit(aws, cluster.id)[0]["details"]["mapped_by"] == "dimension:ClusterId"


def test_given_an_alarm_tagged_with_its_cluster_when_it_fires_then_that_cluster_recovers(
    aws: LocalAws, seed: Seed, recovery: RecoveryStore
) -> None:
    cluster = seed(id="cluster_tagged01", instance_count=1)
    cloudwatch = aws.client("cloudwatch")
    cloudwatch.put_metric_alarm(
        AlarmName="TrainingThroughputLow",
        Namespace="Restarter/Training",
        MetricName="SamplesPerSecond",
        Dimensions=[{"Name": "JobName", "Value": "llama-finetune"}],
        Statistic="Average",
        Period=300,
        EvaluationPeriods=1,
        Threshold=10.0,
        ComparisonOperator="LessThanThreshold",
        Tags=[{"Key": "restarter:cluster", "Value": cluster.id}],
    )
    arn = cloudwatch.describe_alarms(AlarmNames=["TrainingThroughputLow"])["MetricAlarms"][0]["AlarmArn"]
    sample = event(event_id="9d3c1a7b-1111-4a2b-9c3d-4e5f6a7b8c9d", alarmName="TrainingThroughputLow")
    sample["resources"] = [arn]
    sample["detail"]["configuration"]["metrics"][0]["metricStat"]["metric"] = {
        "dimensions": {"JobName": "llama-finetune"},
        "name": "SamplesPerSecond",
        "namespace": "Restarter/Training",
    }

    data = send(sample)

    assert (data["action"], data["cluster_id"]) == ("recovery_started", cluster.id)
    assert finished(aws, data["restart_id"]).status == "ready"
    assert alarm_audit(aws, cluster.id)[0]["details"]["mapped_by"] == "alarm_tag"


def test_given_an_alarm_that_maps_to_no_cluster_when_it_fires_then_it_is_answered_without_a_restart(
    aws: LocalAws, seed: Seed, recovery: RecoveryStore
) -> None:
    seed()  # a cluster with other instances

    data = send(event())  # i-12345678901234567 belongs to no cluster; the alarm has no tags

    assert data["action"] == "unmapped"
    assert aws.executions() == []
    [audited] = alarm_audit(aws, "alarm:arn:aws:cloudwatch:us-east-1:123456789012:alarm:ServerCpuTooHigh")
    assert audited["outcome"] == "unmapped"


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


def test_given_the_previous_recovery_failed_when_the_alarm_fires_again_then_it_escalates_to_the_latest_snapshot(
    aws: LocalAws, seed: Seed, recovery: RecoveryStore
) -> None:
    # cooldown off, so that only the failure escalates
    cluster = seed_instance_cluster(
        seed, labels={"restarter:recovery-cooldown-minutes": "0"}, checkpoints=["snap_old01", "snap_new02"]
    )
    aws.agent.close_port(INSTANCE_ID, 8888)
    first = send(event())
    assert first["strategy"] == "restart"
    assert finished(aws, first["restart_id"]).status in ("failed", "rolled_back")
    aws.agent.open_port(INSTANCE_ID, 8888)

    second = send(event(event_id="1f2e3d4c-5b6a-4978-8a9b-0c1d2e3f4a5b"))

    assert (second["action"], second["strategy"], second["escalated_from"]) == (
        "recovery_started",
        "restore_snapshot",
        "restart",
    )
    assert second["reasons"] == [f"previous recovery {first['restart_id']} (restart) failed"]
    record = finished(aws, second["restart_id"])
    assert record.status == "ready"
    assert record.request["restore_from_snapshot"] == "snap_new02"
    assert record.target.restore_snapshot_id == "snap_new02"
    assert cluster.id == record.cluster_id


def test_given_alarms_again_within_the_cooldown_when_they_fire_then_each_climbs_one_step_until_the_budget(
    aws: LocalAws, seed: Seed, recovery: RecoveryStore, published: EventCapture
) -> None:
    seed_instance_cluster(seed, checkpoints=["snap_only01"])
    strategies = []
    for n in range(3):
        data = send(event(event_id=f"00000000-0000-4000-8000-00000000000{n}"))
        assert data["action"] == "recovery_started"
        strategies.append(data["strategy"])
        assert finished(aws, data["restart_id"]).status == "ready"
    assert strategies == ["restart", "restore_snapshot", "rebuild"]

    fourth = send(event(event_id="00000000-0000-4000-8000-000000000009"))

    assert fourth["action"] == "budget_exhausted"
    assert len(aws.executions()) == 3


def test_given_the_budget_is_spent_when_the_alarm_fires_then_no_restart_and_an_event_says_so(
    aws: LocalAws, seed: Seed, recovery: RecoveryStore, published: EventCapture
) -> None:
    cluster = seed_instance_cluster(seed, labels={"restarter:recovery-budget": "1"})
    first = send(event())
    assert finished(aws, first["restart_id"]).status == "ready"
    published.drain()

    second = send(event(event_id="2b3c4d5e-6f70-4182-93a4-b5c6d7e8f901"))

    assert second["action"] == "budget_exhausted"
    assert len(aws.executions()) == 1
    [exhausted] = [e for e in published.drain() if e["detail-type"] == "Recovery Budget Exhausted"]
    assert exhausted["source"] == "restarter"
    assert exhausted["resources"] == ["arn:aws:cloudwatch:us-east-1:123456789012:alarm:ServerCpuTooHigh"]
    detail = exhausted["detail"]
    assert (detail["cluster_id"], detail["budget"], detail["recoveries_in_window"]) == (cluster.id, 1, 1)
    assert detail["alarm_name"] == "ServerCpuTooHigh" and detail["budget_resets_at"]
    assert [a["outcome"] for a in alarm_audit(aws, cluster.id)] == ["recovery_started", "budget_exhausted"]


def test_given_restore_snapshot_policy_when_the_alarm_fires_then_the_latest_checkpoint_is_restored(
    aws: LocalAws, seed: Seed, recovery: RecoveryStore
) -> None:
    seed_instance_cluster(
        seed,
        labels={"restarter:recovery": "restore_snapshot"},
        checkpoints=["snap_first1", "snap_second2", "snap_third3"],
    )

    data = send(event())

    assert (data["strategy"], data.get("escalated_from")) == ("restore_snapshot", None)
    record = finished(aws, data["restart_id"])
    assert record.status == "ready"
    assert record.request["restore_from_snapshot"] == "snap_third3"
    assert record.request["force"] is True
    assert "root_volume: current -> snap_third3" in record.configuration_updates.applied


def test_given_rebuild_policy_when_the_alarm_fires_then_the_template_image_runs_in_recovery_mode(
    aws: LocalAws, seed: Seed, recovery: RecoveryStore
) -> None:
    seed_instance_cluster(seed, labels={"restarter:recovery": "rebuild"})

    data = send(event())

    assert data["strategy"] == "rebuild"
    record = finished(aws, data["restart_id"])
    assert record.status == "ready"
    assert record.request["update_docker_image"] == "tensorone/pytorch:2.1-cuda12.1"
    assert record.request["environment_updates"] == {"RECOVERY_MODE": "<redacted>", "RECOVERY_TIMESTAMP": "<redacted>"}
    assert "environment.RECOVERY_MODE: (unset) -> <redacted>" in record.configuration_updates.applied
    assert "environment.RECOVERY_TIMESTAMP: (unset) -> <redacted>" in record.configuration_updates.applied


@pytest.mark.time_scale(60)
def test_given_a_restart_in_flight_when_the_alarm_fires_then_it_is_recorded_and_answered_without_error(
    aws: LocalAws, seed: Seed, recovery: RecoveryStore
) -> None:
    cluster = seed_instance_cluster(seed)
    assert aws.deps is not None
    running = accept_restart(aws.deps, cluster.id, {}, trigger="cli", requested_by="tests@example.com")

    data = send(event())

    assert (data["action"], data["error_code"]) == ("refused", "INVALID_STATE")
    assert len(aws.executions()) == 1
    assert recovery.history(cluster.id, aws.clock.now() - timedelta(hours=1)) == []
    assert alarm_audit(aws, cluster.id)[0]["outcome"] == "refused"
    refused = [e for e in aws.deps.audit.entries(cluster.id) if e["action"] == "restart.requested"]
    assert sorted((e["outcome"], e["details"]["trigger"]) for e in refused) == [
        ("accepted", "cli"),
        ("refused", "alarm"),
    ]
    assert finished(aws, running.id).status == "ready"


# ================================================================ the Lambda alarm action shape

ACTION_ARN = "arn:aws:cloudwatch:us-east-1:123456789012:alarm:ServerCpuTooHigh"  # events/alarm_lambda_action_*


def action_event(name: str = "alarm_lambda_action_instance.json", *, timestamp: str | None = None) -> Any:
    """A CloudWatch alarm invoking the function directly; `timestamp` makes it another transition."""
    sample = copy.deepcopy(load_event(name))
    if timestamp is not None:
        sample["time"] = sample["alarmData"]["state"]["timestamp"] = timestamp
    return sample


def test_given_an_instance_mapped_cluster_when_its_alarm_action_fires_ok_to_alarm_then_a_forced_restart_ends_ready(
    aws: LocalAws, seed: Seed, recovery: RecoveryStore
) -> None:
    cluster = seed_instance_cluster(seed)

    data = send(action_event())

    assert (data["action"], data["cluster_id"], data["strategy"]) == ("recovery_started", cluster.id, "restart")
    record = finished(aws, data["restart_id"])
    assert record.status == "ready"
    assert (record.trigger, record.restart_type, record.requested_by) == ("alarm", "force", "alarm:ServerCpuTooHigh")
    expected_id = alarm_handler.lambda_action_event_id(ACTION_ARN, "2019-10-02T17:04:40.989+0000")
    assert data["event_id"] == expected_id
    [stored] = recovery.history(cluster.id, aws.clock.now() - timedelta(hours=1))
    assert (stored.event_id, stored.restart_id) == (expected_id, record.id)
    [audited] = alarm_audit(aws, cluster.id)
    assert audited["outcome"] == "recovery_started"
    assert (audited["details"]["mapped_by"], audited["details"]["alarm_arn"]) == ("dimension:InstanceId", ACTION_ARN)


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


def test_given_a_metric_math_alarm_action_that_maps_to_no_cluster_when_it_fires_then_it_is_answered_without_a_restart(
    aws: LocalAws, seed: Seed, recovery: RecoveryStore
) -> None:
    seed()  # a cluster the alarm does not name
    sample = action_event("alarm_lambda_action_metric_math.json")  # m1/m2 over AWS/Lambda, no dimensions

    data = send(sample)

    assert (data["action"], data["alarm_name"]) == ("unmapped", "Test alert")
    assert aws.executions() == []
    [audited] = alarm_audit(aws, f"alarm:{sample['alarmArn']}")
    assert (audited["outcome"], audited["details"]["state"], audited["details"]["previous_state"]) == (
        "unmapped",
        "ALARM",
        "OK",
    )


def test_given_an_alarm_action_going_back_to_ok_when_it_arrives_then_nothing_restarts(
    aws: LocalAws, seed: Seed, recovery: RecoveryStore
) -> None:
    cluster = seed_instance_cluster(seed)
    sample = action_event()
    sample["alarmData"]["state"], sample["alarmData"]["previousState"] = (
        sample["alarmData"]["previousState"],
        sample["alarmData"]["state"],
    )

    data = send(sample)

    assert (data["action"], data["cluster_id"]) == ("ignored", cluster.id)
    assert aws.executions() == []


@pytest.mark.parametrize(
    "payload",
    [
        {"source": "aws.cloudwatch", "alarmData": {"alarmName": "ServerCpuTooHigh"}},  # no alarmArn, no state
        {**load_event("alarm_lambda_action_instance.json"), "alarmArn": "not-an-alarm-arn"},
        {"source": "aws.ec2", "detail": {}},  # neither shape
        "garbage",
    ],
    ids=["action-without-arn-or-state", "action-with-a-bad-arn", "unknown-shape", "not-json"],
)
def test_given_a_malformed_event_of_either_shape_when_it_arrives_then_the_parser_refuses_it_as_before(
    aws: LocalAws, seed: Seed, recovery: RecoveryStore, payload: Any
) -> None:
    seed_instance_cluster(seed)

    with pytest.raises(ValidationError):
        alarm_handler.lambda_handler(payload, LocalLambdaContext("AlarmRecoveryFunction"))

    assert aws.executions() == []


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
