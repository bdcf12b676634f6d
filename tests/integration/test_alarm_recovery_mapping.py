"""AlarmRecoveryFunction end to end, which alarm recovers which cluster: by instance, by cluster_id
dimension or tag, none; only transitions into ALARM restart; both event shapes (EventBridge and the
Lambda alarm action) from `events/` on the embedded AWS."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from restarter.adapters.recovery_store import RecoveryStore
from restarter.handlers import alarm as alarm_handler
from restarter_local.engine import LocalAws
from restarter_local.lambdas import LocalLambdaContext
from tests.conftest import load_event
from tests.integration.harness import (
    ACTION_ARN,
    EventCapture,
    Seed,
    action_event,
    alarm_audit,
    event,
    finished,
    seed_instance_cluster,
    send,
)

# ================================================================ AlarmRecoveryFunction end to end


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


# ================================================================ the Lambda alarm action shape


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
