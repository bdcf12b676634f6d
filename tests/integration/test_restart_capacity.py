"""InsufficientInstanceCapacity on the real ASL: EC2 refuses to start a scarce GPU type after a
forced restart stopped it (the embedded EC2 answers StartInstances with the real error code)."""

from __future__ import annotations

from typing import Any

from restarter_local.engine import LocalAws
from tests.integration.harness import Seed, ec2_calls

Run = Any


def test_given_capacity_that_returns_when_forced_then_the_start_is_retried_and_the_restart_is_ready(
    aws: LocalAws, seed: Seed, run_restart: Run
) -> None:
    cluster = seed(instance_count=1)
    aws.agent.throttle("ec2", "StartInstances", times=2, error_code="InsufficientInstanceCapacity")

    outcome = run_restart(cluster.id, {"force": True, "timeout_minutes": 30})

    assert outcome.record.status == "ready", outcome.record.error
    assert ec2_calls(aws, "StartInstances") == 3  # refused twice, then started
    assert outcome.record.phase_state["rebooting"].get("capacity_refusals", 0) == 0


def test_given_no_capacity_until_the_deadline_when_forced_then_failed_with_the_instances_stopped(
    aws: LocalAws, seed: Seed, run_restart: Run
) -> None:
    cluster = seed(instance_count=1)
    aws.agent.throttle("ec2", "StartInstances", times=1000, error_code="InsufficientInstanceCapacity")

    outcome = run_restart(cluster.id, {"force": True, "timeout_minutes": 15})

    record = outcome.record
    assert record.status == "failed"
    assert record.error is not None and record.error.phase == "rebooting"
    assert record.error.details["aws_error_code"] == "InsufficientInstanceCapacity"
    assert record.error.details["stopped_instances"] == cluster.instance_ids
    assert "Capacity" in record.error.details["suggestion"]
    assert outcome.cluster.status == "stopped" and outcome.lock_holder is None
    states = [
        i["State"]["Name"]
        for r in aws.client("ec2").describe_instances(InstanceIds=cluster.instance_ids)["Reservations"]
        for i in r["Instances"]
    ]
    assert states == ["stopped"]
