"""Restart scenarios, end to end: the real intake, the real ASL on moto's Step Functions
interpreter, the real step handler, EC2/SSM/DynamoDB/EventBridge on moto. Here graceful, force and
preserve_state restarts, and restarts with realistic instance timings.

Each scenario checks the final record, the AWS calls that were made, and the cluster lock.
"""

from __future__ import annotations

from typing import Any

import pytest

from restarter.domain.models import parse_time
from restarter_local.engine import LocalAws
from tests.integration.harness import (
    EventCapture,
    Run,
    Seed,
    command_ops,
    ec2_calls,
    instances,
    phases_run,
)

# ---------------------------------------------------------------- graceful basic


def test_graceful_restart_runs_every_phase_and_ends_ready(
    aws: LocalAws, seed: Seed, run_restart: Run, published: EventCapture
) -> None:
    # Given a running two-node cluster
    cluster = seed()

    # When it is restarted with the seed's basic request
    outcome = run_restart(
        cluster.id, {"wait_for_ready": True, "timeout_minutes": 20, "restart_reason": "Apply system updates"}
    )

    # Then the execution succeeded and the record says ready, at 100 %
    assert outcome.execution["status"] == "SUCCEEDED"
    record = outcome.record
    assert record.status == "ready"
    assert record.restart_type == "graceful"
    assert record.progress.phase == "ready" and record.progress.percentage == 100
    assert record.progress.steps_completed == record.progress.total_steps == 7
    assert phases_run(outcome) == [
        ("stopping_processes", "succeeded"),
        ("rebooting", "succeeded"),
        ("starting_services", "succeeded"),
        ("health_checks", "succeeded"),
        ("ready", "succeeded"),
    ]
    assert record.error is None
    assert record.reason == "Apply system updates"
    assert record.restart_duration_seconds is not None and record.restart_duration_seconds > 0
    assert record.downtime_seconds is not None and 0 < record.downtime_seconds <= record.restart_duration_seconds
    # the estimate is the sum of the typical durations of the planned phases: stop 2 min,
    # reboot 3 min, start services 1 min, health checks 30 s
    estimated = parse_time(record.estimated_completion_time) - parse_time(record.restart_initiated_at)
    assert estimated.total_seconds() == 120 + 180 + 60 + 30

    # and the AWS calls were: graceful stop through SSM, RebootInstances, start, health check
    assert command_ops(aws, cluster) == ["stop_services", "start_services", "health_check"]
    assert ec2_calls(aws, "RebootInstances") == 1
    assert ec2_calls(aws, "StopInstances") == 0
    assert all(i["State"]["Name"] == "running" for i in instances(aws, cluster))

    # and the lock is released and the cluster is running again
    assert outcome.lock_holder is None
    assert outcome.cluster.status == "running" and outcome.cluster.current_restart_id is None

    # and a progress event was published at every phase change, then a completion event
    events = published.drain()
    phase_events = [e["detail"]["phase"] for e in events if e["detail-type"] == "Restart Phase Changed"]
    assert phase_events == ["stopping_processes", "rebooting", "starting_services", "health_checks", "ready"]
    completed = [e for e in events if e["detail-type"] == "Restart Completed"]
    assert len(completed) == 1 and completed[0]["detail"]["status"] == "ready"


def test_graceful_stop_is_bounded_by_the_grace_period(aws: LocalAws, seed: Seed, run_restart: Run) -> None:
    cluster = seed()
    run_restart(cluster.id, {"grace_period_minutes": 12})
    stop = next(
        c for c in aws.client("ssm").list_commands()["Commands"] if "restarter stop_services" in c.get("Comment", "")
    )
    assert "docker stop --time 720 restarter-workload" in "\n".join(stop["Parameters"]["commands"])


def test_health_checks_probe_the_published_host_port(aws: LocalAws, seed: Seed, run_restart: Run) -> None:
    # Given a cluster whose container port 8888 is published on host port 30888
    cluster = seed()
    # When it restarts
    run_restart(cluster.id, {})
    # Then the health check connects to the host port clients use, not the container's port
    check = next(
        c for c in aws.client("ssm").list_commands()["Commands"] if "restarter health_check" in c.get("Comment", "")
    )
    script = "\n".join(check["Parameters"]["commands"])
    assert "nc -z -w 3 127.0.0.1 30888" in script
    assert "127.0.0.1 8888" not in script


# ---------------------------------------------------------------- force


def test_force_restart_skips_graceful_stop_and_power_cycles(aws: LocalAws, seed: Seed, run_restart: Run) -> None:
    cluster = seed()

    outcome = run_restart(cluster.id, {"force": True, "restart_reason": "Unresponsive"})

    assert outcome.record.status == "ready"
    assert outcome.record.restart_type == "force"
    assert "stopping_processes" not in outcome.record.plan
    assert command_ops(aws, cluster) == ["start_services", "health_check"]
    # StopInstances(Force=True) then StartInstances; never a soft reboot
    assert ec2_calls(aws, "StopInstances") == 1
    assert ec2_calls(aws, "StartInstances") == 1
    assert ec2_calls(aws, "RebootInstances") == 0
    assert aws.agent.last_requests[("ec2", "StopInstances")].get("Force") in ("true", True)
    assert outcome.lock_holder is None


# ---------------------------------------------------------------- preserve_state


def test_preserve_state_snapshots_every_volume_of_every_instance(aws: LocalAws, seed: Seed, run_restart: Run) -> None:
    cluster = seed()  # two instances, each with a root and a data volume

    outcome = run_restart(cluster.id, {"preserve_state": True})

    assert outcome.record.status == "ready"
    assert ("creating_checkpoint", "succeeded") in phases_run(outcome)
    checkpoint_id = outcome.record.changes.checkpoint_id
    assert checkpoint_id and checkpoint_id.startswith("snap_")
    [checkpoint] = outcome.cluster.snapshots
    assert checkpoint.id == checkpoint_id
    assert set(checkpoint.volume_snapshots) == set(cluster.instance_ids)
    assert all(set(devices) == {"/dev/sda1", "/dev/sdf"} for devices in checkpoint.volume_snapshots.values())
    snapshots = aws.client("ec2").describe_snapshots(
        Filters=[{"Name": "tag:restarter:checkpoint", "Values": [checkpoint_id]}]
    )["Snapshots"]
    assert len(snapshots) == 4
    assert all(s["State"] == "completed" for s in snapshots)
    # the checkpoint is taken after the services stopped, before the reboot
    order = [p for p, _ in phases_run(outcome)]
    assert order.index("stopping_processes") < order.index("creating_checkpoint") < order.index("rebooting")


# ---------------------------------------------------------------- with realistic instance timings


@pytest.mark.parametrize(
    "body",
    [{}, {"force": True}, {"update_configuration": {"cpu_cores": 16}, "preserve_state": True}],
    ids=["graceful", "force", "resize-with-checkpoint"],
)
def test_restarts_wait_out_real_instance_transitions(body: dict[str, Any]) -> None:
    """Instances really pass through stopping/stopped/pending/running and boot for minutes;
    the poll loops wait them out and the recorded downtime covers them."""
    from restarter_local.fleet import ClusterSpec, seed_cluster
    from tests.integration.harness import read_outcome

    with LocalAws(time_scale=1200, realistic=True) as engine:
        assert engine.deps is not None
        cluster = seed_cluster(engine, ClusterSpec(id="cluster_real", name="real", instance_type="g5.xlarge"))
        from restarter.services.restart_intake import accept_restart

        accepted = accept_restart(engine.deps, cluster.id, body, trigger="cli", requested_by="tests")
        outcome = read_outcome(engine, accepted.id, engine.wait_for_execution(accepted.execution_arn or "", 120))

    assert outcome.record.status == "ready", outcome.record.error
    assert outcome.lock_holder is None
    # a reboot or a stop/start takes minutes (the vendor guide: 3-5 minutes), never zero
    assert outcome.record.downtime_seconds is not None and outcome.record.downtime_seconds >= 180
