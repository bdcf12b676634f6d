"""Restart scenarios, end to end: the real intake, the real ASL on moto's Step Functions
interpreter, the real step handler, EC2/SSM/DynamoDB/EventBridge on moto.

Each scenario checks the final record, the AWS calls that were made, and the cluster lock.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from restarter.domain.errors import InvalidStateError, RequestValidationError
from restarter.domain.models import Cluster, parse_time
from restarter_local.engine import LocalAws
from tests.integration.harness import (
    EventCapture,
    RestartOutcome,
    command_ops,
    explain_restarts,
    instances,
    read_outcome,
)

Seed = Callable[..., Cluster]
Run = Callable[..., RestartOutcome]


def phases_run(outcome: RestartOutcome) -> list[tuple[str, str]]:
    return [(entry.phase, entry.outcome) for entry in outcome.record.phase_history]


def ec2_calls(aws: LocalAws, action: str) -> int:
    return int(aws.agent.calls.get(("ec2", action), 0))


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


# ---------------------------------------------------------------- configuration updates


def test_cpu_upgrade_changes_instance_type_in_the_same_family(aws: LocalAws, seed: Seed, run_restart: Run) -> None:
    cluster = seed(instance_type="g5.xlarge", instance_count=1)  # 4 vCPUs, 16 GiB, 1x A10G

    outcome = run_restart(cluster.id, {"update_configuration": {"cpu_cores": 16}})

    assert outcome.record.status == "ready"
    [instance] = instances(aws, cluster)
    assert instance["InstanceType"] == "g5.4xlarge"
    assert outcome.cluster.instance_type == "g5.4xlarge"
    assert outcome.cluster.vcpus == 16 and outcome.cluster.gpu_count == 1
    assert outcome.record.configuration_updates.pending == []
    assert outcome.record.configuration_updates.applied == [
        "instance_type: g5.xlarge -> g5.4xlarge",
        "cpu_cores: 4 -> 16",
    ]
    # stop -> modify -> start (a type change needs a stopped instance)
    assert ec2_calls(aws, "StopInstances") == 1
    assert ec2_calls(aws, "ModifyInstanceAttribute") == 1
    assert ec2_calls(aws, "StartInstances") == 1
    assert outcome.lock_holder is None


def test_gpu_count_that_no_type_in_the_family_has_is_refused_before_anything(
    aws: LocalAws, seed: Seed, run_restart: Run
) -> None:
    cluster = seed(instance_type="g5.xlarge", instance_count=1)

    with pytest.raises(RequestValidationError) as refused:
        run_restart(cluster.id, {"update_configuration": {"gpu_count": 3}})

    assert refused.value.details["field"] == "update_configuration"
    assert aws.executions() == []
    assert aws.deps is not None and aws.deps.locks.holder(cluster.id) is None


def test_storage_growth_grows_the_data_volume_of_every_instance(aws: LocalAws, seed: Seed, run_restart: Run) -> None:
    cluster = seed(data_volume_gb=1000)

    outcome = run_restart(cluster.id, {"update_configuration": {"storage_gb": 2000}})

    assert outcome.record.status == "ready"
    volumes = aws.client("ec2").describe_volumes(
        Filters=[{"Name": "attachment.instance-id", "Values": cluster.instance_ids}]
    )["Volumes"]
    sizes = sorted((v["Attachments"][0]["Device"], v["Size"]) for v in volumes)
    assert sizes == [("/dev/sda1", 200), ("/dev/sda1", 200), ("/dev/sdf", 2000), ("/dev/sdf", 2000)]
    assert outcome.cluster.storage_gb == 2000
    assert outcome.record.configuration_updates.applied == ["storage_gb: 1000 -> 2000"]
    assert ec2_calls(aws, "ModifyVolume") == 2


def test_storage_shrink_is_refused_before_anything_happens(aws: LocalAws, seed: Seed, run_restart: Run) -> None:
    cluster = seed(data_volume_gb=1000)

    with pytest.raises(RequestValidationError) as refused:
        run_restart(cluster.id, {"update_configuration": {"storage_gb": 500}})

    assert refused.value.code == "VALIDATION_ERROR"
    assert refused.value.details["field"] == "update_configuration.storage_gb"
    assert refused.value.details["current_storage_gb"] == 1000
    assert aws.executions() == []
    assert ec2_calls(aws, "ModifyVolume") == 0
    assert aws.deps is not None and aws.deps.locks.holder(cluster.id) is None
    assert aws.deps.clusters.get(cluster.id).status == "running"  # type: ignore[union-attr]


def test_region_change_is_refused_with_a_clear_error(aws: LocalAws, seed: Seed, run_restart: Run) -> None:
    cluster = seed()

    with pytest.raises(RequestValidationError) as refused:
        run_restart(cluster.id, {"update_configuration": {"region": "us-west-2"}})

    assert refused.value.details["field"] == "update_configuration.region"
    assert "migration" in refused.value.message
    assert aws.executions() == []


def test_image_environment_and_ports_are_applied_at_starting_services(
    aws: LocalAws, seed: Seed, run_restart: Run, published: EventCapture
) -> None:
    cluster = seed()

    outcome = run_restart(
        cluster.id,
        {
            "update_docker_image": "tensorone/pytorch:2.2-cuda12.1",
            "environment_updates": {"MODEL_VERSION": "v2.0", "BATCH_SIZE": "128", "WANDB_KEY": "wandb_secret_xyz"},
            "port_mapping_updates": [
                {"internal_port": 8080, "external_port": 0, "protocol": "tcp", "description": "Web Interface"}
            ],
        },
    )

    assert outcome.record.status == "ready"
    # the containers on every instance run the new image with both ports
    for instance_id in cluster.instance_ids:
        container = aws.agent.containers[instance_id]
        assert container["running"] and container["image"] == "tensorone/pytorch:2.2-cuda12.1"
        assert sorted(p["internal_port"] for p in container["ports"]) == [8080, 8888]
    # external port 0 was auto-assigned from the ephemeral range
    mappings = {p.internal_port: p for p in outcome.cluster.container.port_mappings}
    assert 30000 <= mappings[8080].external_port < 32768
    assert mappings[8080].status == "active" and mappings[8080].description == "Web Interface"
    # the environment parameter holds the merged values
    env = json.loads(
        aws.client("ssm").get_parameter(Name=outcome.cluster.container.environment_parameter, WithDecryption=True)[
            "Parameter"
        ]["Value"]
    )
    assert env == {
        "BATCH_SIZE": "128",
        "HF_TOKEN": "hf_secret_value_never_logged",
        "MODEL_VERSION": "v2.0",
        "WANDB_KEY": "wandb_secret_xyz",
    }
    applied = outcome.record.configuration_updates.applied
    assert "docker_image: tensorone/pytorch:2.1-cuda12.1 -> tensorone/pytorch:2.2-cuda12.1" in applied
    assert "environment.MODEL_VERSION: <redacted> -> <redacted>" in applied
    assert "environment.BATCH_SIZE: (unset) -> <redacted>" in applied
    assert f"port_mapping.tcp/8080: (none) -> {mappings[8080].external_port}" in applied

    # and no secret value reached the record, the audit trail, the events or a command
    assert aws.deps is not None
    stored = json.dumps(
        [
            outcome.record.model_dump(mode="json"),
            aws.deps.audit.entries(cluster.id),
            published.drain(),
            aws.client("ssm").list_commands()["Commands"],
        ],
        default=str,
    )
    for secret in ("wandb_secret_xyz", "hf_secret_value_never_logged", "v2.0", '128"'):
        assert secret not in stored


def test_apply_system_updates_runs_the_patch_baseline_before_the_reboot(
    aws: LocalAws, seed: Seed, run_restart: Run
) -> None:
    cluster = seed()

    outcome = run_restart(cluster.id, {"apply_system_updates": True})

    assert outcome.record.status == "ready"
    ops = command_ops(aws, cluster)
    assert ops == ["stop_services", "AWS-RunPatchBaseline", "start_services", "health_check"]
    patch = next(
        c for c in aws.client("ssm").list_commands()["Commands"] if c["DocumentName"] == "AWS-RunPatchBaseline"
    )
    assert patch["Parameters"]["Operation"] == ["Install"]
    assert patch["Parameters"]["RebootOption"] == ["NoReboot"]
    assert outcome.record.configuration_updates.applied == ["system_updates: pending -> installed"]
    assert ec2_calls(aws, "RebootInstances") == 1


def test_restore_from_snapshot_replaces_every_root_volume(aws: LocalAws, seed: Seed, run_restart: Run) -> None:
    # Given a cluster with a checkpoint taken by an earlier restart
    cluster = seed()
    checkpoint = run_restart(cluster.id, {"preserve_state": True}).cluster.snapshots[0]
    roots_before = {i["InstanceId"]: _root_volume(i) for i in instances(aws, cluster)}

    # When it is force-restarted from that checkpoint (the seed's third curl example)
    outcome = run_restart(
        cluster.id, {"force": True, "restore_from_snapshot": checkpoint.id, "restart_reason": "Restore from backup"}
    )

    # Then every root volume was replaced by one made from the checkpoint's root snapshot
    assert outcome.record.status == "ready"
    for inst in instances(aws, cluster):
        new_root = _root_volume(inst)
        assert new_root != roots_before[inst["InstanceId"]]
        volume = aws.client("ec2").describe_volumes(VolumeIds=[new_root])["Volumes"][0]
        assert volume["SnapshotId"] == checkpoint.volume_snapshots[inst["InstanceId"]]["/dev/sda1"]
    assert outcome.record.configuration_updates.applied == [f"root_volume: current -> {checkpoint.id}"]
    assert set(outcome.record.changes.replaced_root_volumes) == set(cluster.instance_ids)


def test_restore_from_an_unknown_snapshot_is_refused(aws: LocalAws, seed: Seed, run_restart: Run) -> None:
    cluster = seed()
    with pytest.raises(RequestValidationError) as refused:
        run_restart(cluster.id, {"force": True, "restore_from_snapshot": "snap_xyz789"})
    assert refused.value.details["field"] == "restore_from_snapshot"
    assert aws.executions() == []


def _root_volume(instance: dict[str, Any]) -> str:
    root = instance["RootDeviceName"]
    return next(b["Ebs"]["VolumeId"] for b in instance["BlockDeviceMappings"] if b["DeviceName"] == root)


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


# ---------------------------------------------------------------- one restart at a time


def test_second_restart_while_one_runs_is_invalid_state(aws: LocalAws, seed: Seed) -> None:
    from restarter.services.restart_intake import accept_restart

    assert aws.deps is not None
    cluster = seed()
    first = accept_restart(aws.deps, cluster.id, {}, trigger="cli", requested_by="a")

    with pytest.raises(InvalidStateError) as refused:
        accept_restart(aws.deps, cluster.id, {"force": True}, trigger="cli", requested_by="b")

    assert refused.value.to_envelope() == {
        "success": False,
        "error": {
            "code": "INVALID_STATE",
            "message": "Cluster cannot be restarted in current state",
            "details": {
                "current_status": "restarting",
                "allowed_states": ["running", "stopped", "error"],
                "suggestion": "Wait for the restart in progress to finish, or cancel it",
                "restart_id": first.id,
            },
        },
    }
    aws.wait_for_execution(first.execution_arn or "")
    assert aws.deps.locks.holder(cluster.id) is None
    assert len(aws.executions()) == 1


def test_the_lock_refuses_a_racing_second_restart_even_if_the_cluster_record_lags(aws: LocalAws, seed: Seed) -> None:
    from restarter.services.restart_intake import accept_restart

    assert aws.deps is not None
    cluster = seed()
    first = accept_restart(aws.deps, cluster.id, {}, trigger="cli", requested_by="a")
    # a second intake that read the cluster before the first one wrote it
    aws.deps.clusters.put(cluster)

    with pytest.raises(InvalidStateError) as refused:
        accept_restart(aws.deps, cluster.id, {}, trigger="cli", requested_by="b")

    assert refused.value.details["restart_id"] == first.id
    assert aws.deps.restarts.get(first.id) is not None
    aws.wait_for_execution(first.execution_arn or "")


@pytest.mark.parametrize("status", ["starting", "stopping", "restarting"])
def test_cluster_in_a_transitional_state_cannot_restart(aws: LocalAws, seed: Seed, status: str) -> None:
    from restarter.services.restart_intake import accept_restart

    assert aws.deps is not None
    cluster = seed()
    aws.deps.clusters.put(cluster.model_copy(update={"status": status}))

    with pytest.raises(InvalidStateError) as refused:
        accept_restart(aws.deps, cluster.id, {}, trigger="cli", requested_by="a")

    assert refused.value.details["current_status"] == status
    assert refused.value.details["allowed_states"] == ["running", "stopped", "error"]
    assert refused.value.details["suggestion"]
    assert aws.executions() == []


def test_stopped_cluster_is_started_without_a_graceful_stop(aws: LocalAws, seed: Seed, run_restart: Run) -> None:
    cluster = seed(status="stopped")

    outcome = run_restart(cluster.id)

    assert outcome.record.status == "ready"
    assert "stopping_processes" not in outcome.record.plan
    assert ec2_calls(aws, "StartInstances") == 1
    assert outcome.cluster.status == "running"


def test_error_cluster_recovers_with_a_forced_restart(aws: LocalAws, seed: Seed, run_restart: Run) -> None:
    cluster = seed(status="error")

    outcome = run_restart(cluster.id, {"force": True, "apply_system_updates": True, "restart_reason": "Error recovery"})

    assert outcome.record.status == "ready"
    assert outcome.cluster.status == "running"


def test_every_terminal_path_is_audited(aws: LocalAws, seed: Seed, run_restart: Run) -> None:
    cluster = seed()
    outcome = run_restart(cluster.id, {"restart_reason": "audit me"})
    assert aws.deps is not None
    entries = aws.deps.audit.entries(cluster.id)
    actions = [(e["action"], e["outcome"]) for e in entries]
    assert ("restart.requested", "accepted") in actions
    assert ("restart.finished", "ready") in actions
    requested = next(e for e in entries if e["action"] == "restart.requested")
    assert requested["actor"] == "tests@example.com"
    assert requested["details"]["reason"] == "audit me"
    assert requested["details"]["restart_id"] == outcome.record.id


def test_abandon_records_the_failure_and_releases_the_lock(aws: LocalAws, seed: Seed) -> None:
    """If cleanup itself keeps failing, the last resort still frees the cluster."""
    from restarter.handlers.restart_step import lambda_handler
    from restarter.services.restart_intake import accept_restart
    from restarter_local.lambdas import LocalLambdaContext

    assert aws.deps is not None
    cluster = seed()
    accepted = accept_restart(aws.deps, cluster.id, {}, trigger="cli", requested_by="a")
    aws.wait_for_execution(accepted.execution_arn or "")
    # simulate a record stuck mid-restart with its lock held
    stored = aws.deps.restarts.get(accepted.id)
    assert stored is not None
    record, version = stored
    record.status = "restarting"
    aws.deps.restarts.put(record, version)
    aws.deps.locks.acquire(cluster.id, accepted.id, aws.clock.now(), aws.clock.now())

    result = lambda_handler(
        {"action": "abandon", "restart_id": accepted.id, "error": {"Error": "States.TaskFailed", "Cause": "boom"}},
        LocalLambdaContext("RestartStepFunction"),
    )

    assert result["done"] is True
    outcome = read_outcome(aws, accepted.id, {})
    assert outcome.record.status == "failed"
    assert outcome.lock_holder is None
    assert outcome.cluster.status == "error"


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
