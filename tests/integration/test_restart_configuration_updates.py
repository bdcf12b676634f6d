"""Restarts that update the configuration, end to end: instance type, storage, region, image,
environment and ports, system updates, restore from a snapshot; what cannot be done is refused
before anything happens."""

from __future__ import annotations

import json
from typing import Any

import pytest

from restarter.domain.errors import RequestValidationError
from restarter_local.engine import LocalAws
from tests.integration.harness import (
    EventCapture,
    Run,
    Seed,
    command_ops,
    ec2_calls,
    instances,
)

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
