"""Restarts that fail, end to end: a failed health check or type change rolled back, a restart past
its timeout, throttled AWS calls retried (each instance snapshotted, grown or restored once)."""

from __future__ import annotations

import json

from restarter_local.engine import LocalAws
from tests.integration.harness import (
    EventCapture,
    Run,
    Seed,
    command_ops,
    ec2_calls,
    explain_restarts,
    instances,
    phases_run,
)

# ---------------------------------------------------------------- failure, rollback, timeout


def test_failed_health_check_rolls_back_the_image_and_environment(aws: LocalAws, seed: Seed, run_restart: Run) -> None:
    # Given a cluster whose new image will not answer on its port
    cluster = seed()
    aws.agent.close_port(cluster.instance_ids[1], 8888)
    env_before = aws.client("ssm").get_parameter(
        Name=cluster.container.environment_parameter or "", WithDecryption=True
    )["Parameter"]["Value"]

    # When a deployment restart runs
    outcome = run_restart(
        cluster.id,
        {"update_docker_image": "tensorone/pytorch:2.2-cuda12.1", "environment_updates": {"MODEL_VERSION": "v2.0"}},
    )

    # Then the health checks fail, and the restart is rolled back and recorded
    assert outcome.execution["status"] == "FAILED"
    record = outcome.record
    assert record.status == "rolled_back"
    assert record.error is not None and record.error.phase == "health_checks"
    assert record.error.message == "Health checks failed"
    assert (
        "port tcp/30888 (container port 8888) not answering"
        in record.error.details["problems"][cluster.instance_ids[1]]
    )
    assert ("health_checks", "failed") in phases_run(outcome)
    # the previous image and environment are back, and the services run them again
    assert outcome.cluster.container.image == "tensorone/pytorch:2.1-cuda12.1"
    env_after = aws.client("ssm").get_parameter(
        Name=outcome.cluster.container.environment_parameter or "", WithDecryption=True
    )["Parameter"]["Value"]
    assert json.loads(env_after) == json.loads(env_before)
    assert all(aws.agent.containers[i]["image"] == "tensorone/pytorch:2.1-cuda12.1" for i in cluster.instance_ids)
    assert command_ops(aws, cluster)[-1] == "start_services"
    # and the lock is released
    assert outcome.lock_holder is None
    assert outcome.cluster.current_restart_id is None


def test_failed_instance_type_change_is_rolled_back_to_the_old_type(
    aws: LocalAws, seed: Seed, run_restart: Run
) -> None:
    cluster = seed(instance_type="g5.xlarge", instance_count=1)
    aws.agent.fail_command(
        cluster.instance_ids[0], "start_services", stderr="docker: Error response from daemon", times=1
    )

    outcome = run_restart(cluster.id, {"update_configuration": {"cpu_cores": 16}})

    assert outcome.record.status == "rolled_back"
    assert outcome.record.error is not None and outcome.record.error.phase == "starting_services"
    [instance] = instances(aws, cluster)
    assert instance["InstanceType"] == "g5.xlarge"
    assert instance["State"]["Name"] == "running"
    assert outcome.cluster.instance_type == "g5.xlarge"
    assert outcome.cluster.status == "running"
    assert outcome.lock_holder is None


def test_restart_past_its_timeout_ends_timed_out_and_releases_the_lock(
    aws: LocalAws, seed: Seed, run_restart: Run, published: EventCapture
) -> None:
    # Given an instance that never passes its status checks after the reboot
    cluster = seed()
    aws.agent.set_never_healthy(cluster.instance_ids[0])

    # When a forced restart with a ten-minute timeout runs
    outcome = run_restart(cluster.id, {"force": True, "timeout_minutes": 10})

    # Then it ends timed_out, in the phase it was waiting in, with the cleanup done
    assert outcome.execution["status"] == "FAILED"
    assert outcome.record.status == "timed_out"
    assert outcome.record.error is not None
    assert outcome.record.error.code == "TIMED_OUT"
    assert outcome.record.error.phase == "starting_services"
    assert outcome.lock_holder is None
    assert outcome.cluster.status == "error"
    assert outcome.cluster.current_restart_id is None
    assert "cleanup gave up waiting for the instances; cluster needs attention" in outcome.record.rollback_notes
    completed = [e for e in published.drain() if e["detail-type"] == "Restart Completed"]
    assert completed[0]["detail"]["status"] == "timed_out"


def test_throttled_api_is_retried_with_backoff_then_succeeds(aws: LocalAws, seed: Seed, run_restart: Run) -> None:
    # Given EC2 refuses the next two reboots with RequestLimitExceeded
    cluster = seed()
    aws.agent.throttle("ec2", "RebootInstances", times=2)

    outcome = run_restart(cluster.id)

    # Then the state machine retried the step and the restart succeeded
    assert outcome.record.status == "ready"
    assert aws.agent.throttled_calls[("ec2", "RebootInstances")] == 2
    assert ec2_calls(aws, "RebootInstances") == 3
    history = aws.execution_history(outcome.record.execution_arn or "")
    retried = [
        e
        for e in history
        if e["type"] == "TaskFailed" and e["taskFailedEventDetails"]["error"] == "TransientProviderError"
    ]
    assert len(retried) == 2
    assert outcome.lock_holder is None
    # and the retried phase was entered (and announced) once
    assert [p for p, _ in phases_run(outcome)].count("rebooting") == 1


def test_a_checkpoint_throttled_halfway_snapshots_each_instance_once(
    aws: LocalAws, seed: Seed, run_restart: Run
) -> None:
    # Given EC2 throttles CreateSnapshots for the second instance of a two-instance cluster
    cluster = seed()
    aws.agent.throttle("ec2", "CreateSnapshots", times=1, after=1)

    outcome = run_restart(cluster.id, {"preserve_state": True})

    # Then the retry snapshotted only the instance not done yet, under the same checkpoint
    assert outcome.record.status == "ready", explain_restarts(aws)
    assert aws.agent.throttled_calls[("ec2", "CreateSnapshots")] == 1
    assert ec2_calls(aws, "CreateSnapshots") == 3  # first instance, throttled second, retried second
    [checkpoint] = outcome.cluster.snapshots
    assert set(checkpoint.volume_snapshots) == set(cluster.instance_ids)
    every_snapshot = aws.client("ec2").describe_snapshots(
        Filters=[{"Name": "tag:restarter:cluster", "Values": [cluster.id]}]
    )["Snapshots"]
    assert len(every_snapshot) == 4  # two volumes on each of two instances: nothing orphaned
    assert {t["Value"] for s in every_snapshot for t in s.get("Tags", []) if t["Key"] == "restarter:checkpoint"} == {
        checkpoint.id
    }


def test_storage_growth_throttled_halfway_grows_every_volume(aws: LocalAws, seed: Seed, run_restart: Run) -> None:
    # Given EC2 throttles ModifyVolume for the second instance's data volume
    cluster = seed(data_volume_gb=1000)
    aws.agent.throttle("ec2", "ModifyVolume", times=1, after=1)

    outcome = run_restart(cluster.id, {"update_configuration": {"storage_gb": 2000}})

    # Then the retry grew the volume it had not grown yet, and only that one
    assert outcome.record.status == "ready", explain_restarts(aws)
    volumes = aws.client("ec2").describe_volumes(
        Filters=[{"Name": "attachment.instance-id", "Values": cluster.instance_ids}]
    )["Volumes"]
    assert sorted(v["Size"] for v in volumes if v["Attachments"][0]["Device"] == "/dev/sdf") == [2000, 2000]
    assert ec2_calls(aws, "ModifyVolume") == 3
    assert outcome.record.configuration_updates.applied == ["storage_gb: 1000 -> 2000"]


def test_a_root_volume_restore_throttled_halfway_starts_one_task_per_instance(
    aws: LocalAws, seed: Seed, run_restart: Run
) -> None:
    # Given a checkpoint, and EC2 throttling the second CreateReplaceRootVolumeTask
    cluster = seed()
    checkpoint = run_restart(cluster.id, {"preserve_state": True}).cluster.snapshots[0]
    aws.agent.throttle("ec2", "CreateReplaceRootVolumeTask", times=1, after=1)

    outcome = run_restart(cluster.id, {"force": True, "restore_from_snapshot": checkpoint.id})

    # Then each instance got exactly one replacement task
    assert outcome.record.status == "ready", explain_restarts(aws)
    tasks = aws.client("ec2").describe_replace_root_volume_tasks()["ReplaceRootVolumeTasks"]
    assert sorted(t["InstanceId"] for t in tasks) == sorted(cluster.instance_ids)
