"""The EC2 APIs the extensions add or rely on: CreateReplaceRootVolumeTask, and moto 5.2.5's
snapshots, volume modifications, force stop, type changes and GPU info the product relies on."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from restarter_local.moto_ext import (
    SimulatedAgentState,
)
from tests.integration.moto_ext.harness import (
    error_of,
    launch,
    root_volume_id,
)

# -- CreateReplaceRootVolumeTask ----------------------------------------------------------------


def _snapshots_by_volume(ec2: Any, instance_id: str) -> dict[str, str]:
    snapshots = ec2.create_snapshots(
        InstanceSpecification={"InstanceId": instance_id, "ExcludeBootVolume": False},
        CopyTagsFromSource="volume",
        TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": "restarter:checkpoint", "Value": "c1"}]}],
    )["Snapshots"]
    return {s["VolumeId"]: s["SnapshotId"] for s in snapshots}


def test_replace_root_volume_from_a_root_snapshot(state: SimulatedAgentState, ec2: Any) -> None:
    # given a running instance and a snapshot of its root volume
    [instance_id] = launch(ec2)
    old_root = root_volume_id(ec2, instance_id)
    snapshot_id = _snapshots_by_volume(ec2, instance_id)[old_root]
    # when the root volume is replaced from it
    task = ec2.create_replace_root_volume_task(
        InstanceId=instance_id,
        SnapshotId=snapshot_id,
        DeleteReplacedRootVolume=False,
        TagSpecifications=[
            {"ResourceType": "replace-root-volume-task", "Tags": [{"Key": "restarter:restart", "Value": "rst_1"}]}
        ],
    )["ReplaceRootVolumeTask"]
    # then the task succeeded
    assert task["ReplaceRootVolumeTaskId"].startswith("replacevol-")
    assert len(task["ReplaceRootVolumeTaskId"]) == len("replacevol-") + 17
    assert (task["InstanceId"], task["TaskState"], task["SnapshotId"]) == (instance_id, "succeeded", snapshot_id)
    assert task["DeleteReplacedRootVolume"] is False
    assert task["StartTime"] and task["CompleteTime"]
    assert task["Tags"] == [{"Key": "restarter:restart", "Value": "rst_1"}]
    # and the instance's root device now holds a new volume made from the snapshot
    new_root = root_volume_id(ec2, instance_id)
    assert new_root != old_root
    [new_volume] = ec2.describe_volumes(VolumeIds=[new_root])["Volumes"]
    assert (new_volume["SnapshotId"], new_volume["Size"], new_volume["State"]) == (snapshot_id, 50, "in-use")
    assert new_volume["Attachments"][0]["InstanceId"] == instance_id
    assert new_volume["Attachments"][0]["Device"] == "/dev/sda1"
    # and the old root is kept, detached
    [old_volume] = ec2.describe_volumes(VolumeIds=[old_root])["Volumes"]
    assert (old_volume["State"], old_volume["Attachments"]) == ("available", [])


def test_replace_root_volume_can_delete_the_replaced_volume(state: SimulatedAgentState, ec2: Any) -> None:
    # given a stopped instance and a root snapshot
    [instance_id] = launch(ec2)
    old_root = root_volume_id(ec2, instance_id)
    snapshot_id = _snapshots_by_volume(ec2, instance_id)[old_root]
    ec2.stop_instances(InstanceIds=[instance_id])
    # when the root is replaced with DeleteReplacedRootVolume
    ec2.create_replace_root_volume_task(InstanceId=instance_id, SnapshotId=snapshot_id, DeleteReplacedRootVolume=True)
    # then the old volume is gone
    with pytest.raises(ClientError) as exc:
        ec2.describe_volumes(VolumeIds=[old_root])
    assert error_of(exc)[0] == "InvalidVolume.NotFound"


def test_replace_root_volume_validates_its_inputs(state: SimulatedAgentState, ec2: Any) -> None:
    # given an instance with a data volume snapshot, and a terminated instance
    [instance_id] = launch(ec2)
    snapshots = _snapshots_by_volume(ec2, instance_id)
    data_snapshot = next(s for v, s in snapshots.items() if v != root_volume_id(ec2, instance_id))
    [gone] = launch(ec2)
    ec2.terminate_instances(InstanceIds=[gone])
    # when replacing from a non-root snapshot, an unknown snapshot, or on a terminated instance
    with pytest.raises(ClientError) as not_root:
        ec2.create_replace_root_volume_task(InstanceId=instance_id, SnapshotId=data_snapshot)
    with pytest.raises(ClientError) as missing:
        ec2.create_replace_root_volume_task(InstanceId=instance_id, SnapshotId="snap-0123456789abcdef0")
    with pytest.raises(ClientError) as terminated:
        ec2.create_replace_root_volume_task(InstanceId=gone)
    # then each is refused
    assert error_of(not_root)[0] == "InvalidParameterValue"
    assert error_of(missing)[0] == "InvalidSnapshot.NotFound"
    assert error_of(terminated)[0] == "IncorrectInstanceState"


def test_replace_root_volume_without_snapshot_restores_launch_state(state: SimulatedAgentState, ec2: Any) -> None:
    # given a running instance
    [instance_id] = launch(ec2)
    old_root = root_volume_id(ec2, instance_id)
    # when the root is replaced with no snapshot
    task = ec2.create_replace_root_volume_task(InstanceId=instance_id)["ReplaceRootVolumeTask"]
    # then a fresh volume of the same size is the root
    assert "SnapshotId" not in task
    [volume] = ec2.describe_volumes(VolumeIds=[root_volume_id(ec2, instance_id)])["Volumes"]
    assert volume["VolumeId"] != old_root
    assert volume["Size"] == 50


def test_describe_replace_root_volume_tasks(state: SimulatedAgentState, ec2: Any) -> None:
    # given tasks on two instances
    first, second = launch(ec2, count=2)
    task_one = ec2.create_replace_root_volume_task(InstanceId=first)["ReplaceRootVolumeTask"]
    task_two = ec2.create_replace_root_volume_task(InstanceId=second)["ReplaceRootVolumeTask"]
    # when they are described by id, by instance filter and all together
    by_id = ec2.describe_replace_root_volume_tasks(ReplaceRootVolumeTaskIds=[task_two["ReplaceRootVolumeTaskId"]])
    by_instance = ec2.describe_replace_root_volume_tasks(Filters=[{"Name": "instance-id", "Values": [first]}])
    everything = ec2.describe_replace_root_volume_tasks()
    # then each selects the right ones
    assert by_id["ReplaceRootVolumeTasks"] == [task_two]
    assert by_instance["ReplaceRootVolumeTasks"] == [task_one]
    assert {t["ReplaceRootVolumeTaskId"] for t in everything["ReplaceRootVolumeTasks"]} == {
        task_one["ReplaceRootVolumeTaskId"],
        task_two["ReplaceRootVolumeTaskId"],
    }


# -- moto 5.2.5 behaviour the product relies on -------------------------------------------------


def test_create_snapshots_returns_one_snapshot_per_volume_with_copied_tags(
    state: SimulatedAgentState, ec2: Any
) -> None:
    # given an instance with two volumes tagged with their cluster
    [instance_id] = launch(ec2)
    volume_ids = [v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]]
    ec2.create_tags(Resources=volume_ids, Tags=[{"Key": "restarter:cluster", "Value": "cluster_1"}])
    # when a multi-volume snapshot set is created copying the volume tags
    snapshots = ec2.create_snapshots(
        InstanceSpecification={"InstanceId": instance_id, "ExcludeBootVolume": False},
        CopyTagsFromSource="volume",
        TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": "restarter:checkpoint", "Value": "c1"}]}],
    )["Snapshots"]
    # then there is one snapshot per volume, with the volume's and the requested tags
    assert sorted(s["VolumeId"] for s in snapshots) == sorted(volume_ids)
    for snapshot in snapshots:
        tags = {t["Key"]: t["Value"] for t in snapshot["Tags"]}
        assert tags == {"restarter:cluster": "cluster_1", "restarter:checkpoint": "c1"}


def test_modify_volume_reports_a_modification_and_snapshots_keep_their_size(
    state: SimulatedAgentState, ec2: Any
) -> None:
    # given a root volume with a snapshot
    [instance_id] = launch(ec2)
    volume_id = root_volume_id(ec2, instance_id)
    snapshot_id = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    # when the volume grows
    modification = ec2.modify_volume(VolumeId=volume_id, Size=200)["VolumeModification"]
    # then the modification is reported and the volume has the new size
    # (moto answers "completed" at once where AWS says "modifying"; its transformer misses the key)
    assert modification["ModificationState"] in ("modifying", "completed")
    [described] = ec2.describe_volumes_modifications(VolumeIds=[volume_id])["VolumesModifications"]
    assert (described["OriginalSize"], described["TargetSize"]) == (50, 200)
    assert described["ModificationState"] in ("modifying", "optimizing", "completed")
    assert ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Size"] == 200
    # and the earlier snapshot still has the size it was taken at (moto reads the live volume)
    assert ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["VolumeSize"] == 50


def test_force_stop_and_instance_type_change(state: SimulatedAgentState, ec2: Any) -> None:
    # given a running p5 instance
    [instance_id] = launch(ec2, "p5.48xlarge")
    # when it is force-stopped and its type changed
    stopping = ec2.stop_instances(InstanceIds=[instance_id], Force=True)["StoppingInstances"][0]
    ec2.modify_instance_attribute(InstanceId=instance_id, InstanceType={"Value": "p4d.24xlarge"})
    # then it is stopped with the new type
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    assert stopping["PreviousState"]["Name"] == "running"
    assert (instance["State"]["Name"], instance["InstanceType"]) == ("stopped", "p4d.24xlarge")


def test_instance_types_carry_gpu_info(state: SimulatedAgentState, ec2: Any) -> None:
    # when the p5 type is described
    [p5] = ec2.describe_instance_types(InstanceTypes=["p5.48xlarge"])["InstanceTypes"]
    # then it has 8 H100 GPUs of 80 GiB
    [gpu] = p5["GpuInfo"]["Gpus"]
    assert (gpu["Manufacturer"], gpu["Name"], gpu["Count"], gpu["MemoryInfo"]["SizeInMiB"]) == (
        "NVIDIA",
        "H100",
        8,
        81920,
    )
