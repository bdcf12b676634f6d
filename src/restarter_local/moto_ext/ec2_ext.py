"""EC2 extensions: never-healthy status checks and replace-root-volume tasks."""

from __future__ import annotations

from typing import Any

from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models import EC2Backend
from moto.ec2.models.elastic_block_store import Snapshot
from moto.ec2.models.instances import Instance
from moto.ec2.responses import EC2Response
from moto.ec2.utils import random_resource_id

from . import _runtime
from .registry import adds, wraps

_TASKS_ATTR = "_restarter_replace_root_volume_tasks"
_LINEAGE_ATTR = "_restarter_root_volume_lineage"
_SNAPSHOT_SIZE_ATTR = "_restarter_volume_size"


# -- status checks --------------------------------------------------------------------------------


def _wrap_never_healthy(original: property) -> property:
    def getter(self: Instance) -> dict[str, Any]:
        state = _runtime.active_state()
        if state is not None and self.is_running() and state.is_never_healthy(self.id):
            return {
                "Details": [{"Name": "reachability", "Status": "initializing"}],
                "Status": "initializing",
            }
        result: dict[str, Any] = original.fget(self)  # type: ignore[misc]
        return result

    return property(getter)


# -- snapshots ------------------------------------------------------------------------------------
# moto 5.2.5 reads a snapshot's VolumeSize from the live volume (so ModifyVolume changes old
# snapshots) and ignores CreateSnapshots' CopyTagsFromSource.


def _wrap_create_snapshot(original: Any) -> Any:
    def create_snapshot(self: EC2Backend, volume_id: str, *args: Any, **kwargs: Any) -> Snapshot:
        snapshot: Snapshot = original(self, volume_id, *args, **kwargs)
        snapshot.__dict__[_SNAPSHOT_SIZE_ATTR] = snapshot.volume.size
        return snapshot

    return create_snapshot


def _wrap_volume_size(original: property) -> property:
    def volume_size(self: Snapshot) -> int:
        recorded = self.__dict__.get(_SNAPSHOT_SIZE_ATTR)
        return int(recorded) if recorded is not None else int(original.fget(self))  # type: ignore[misc]

    return property(volume_size)


def _wrap_create_snapshots(original: Any) -> Any:
    def create_snapshots(self: EC2Response) -> ActionResult:
        result: ActionResult = original(self)
        if str(self._get_param("CopyTagsFromSource") or "").lower() == "volume":
            requested = self._parse_tag_specification().get("snapshot", {})
            for snapshot in result.result["Snapshots"]:  # type: ignore[index]
                copied = {tag["key"]: tag["value"] for tag in snapshot.volume.get_tags()}
                snapshot.add_tags({**copied, **requested})
        return result

    return create_snapshots


# -- replace root volume --------------------------------------------------------------------------


def _timestamp() -> str:
    return utcnow().strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _tasks(backend: Any) -> dict[str, dict[str, Any]]:
    tasks: dict[str, dict[str, Any]] = backend.__dict__.setdefault(_TASKS_ATTR, {})
    return tasks


def _lineage(backend: Any, instance_id: str) -> set[str]:
    lineage: dict[str, set[str]] = backend.__dict__.setdefault(_LINEAGE_ATTR, {})
    return lineage.setdefault(instance_id, set())


def _in_lineage(backend: Any, snapshot: Any, volume_ids: set[str]) -> bool:
    """The snapshot was taken of one of the instance's (past) root volumes, or of a volume
    restored from such a snapshot."""
    seen: set[str] = set()
    while snapshot is not None and snapshot.id not in seen:
        seen.add(snapshot.id)
        volume = snapshot.volume
        if volume.id in volume_ids:
            return True
        parent = getattr(volume, "snapshot_id", None)
        snapshot = backend.snapshots.get(parent) if parent else None
    return False


def create_replace_root_volume_task(
    self: EC2Backend,
    *,
    instance_id: str,
    snapshot_id: str | None,
    image_id: str | None,
    delete_replaced_root_volume: bool,
    tags: dict[str, str],
) -> dict[str, Any]:
    """Replace the root volume at once (moto is instant): TaskState ``succeeded``.

    Without SnapshotId/ImageId the root is restored to its launch state (a fresh volume of the
    same size). A SnapshotId must belong to the root volume's lineage, as AWS requires."""
    instance = self.get_instance(instance_id)
    if instance.state not in ("running", "stopped"):
        raise EC2ClientError(
            "IncorrectInstanceState",
            f"The instance '{instance_id}' is not in a state from which its root volume can be replaced.",
        )
    device = instance.root_device_name
    old_mapping = instance.block_device_mapping.get(device)
    if old_mapping is None:
        raise EC2ClientError("InvalidParameterValue", f"The instance '{instance_id}' has no root volume.")
    old_volume = self.get_volume(old_mapping.volume_id)
    lineage = _lineage(self, instance_id)
    lineage.add(old_volume.id)

    snapshot = None
    if snapshot_id:
        snapshot = self.get_snapshot(snapshot_id)
        if not _in_lineage(self, snapshot, lineage):
            raise EC2ClientError(
                "InvalidParameterValue",
                f"The snapshot '{snapshot_id}' does not belong to the lineage of the root volume "
                f"of instance '{instance_id}'.",
            )
    elif image_id:
        image = self.describe_images(ami_ids=[image_id])[0]
        snapshot = getattr(image, "ebs_snapshot", None)

    new_volume = self.create_volume(
        size=snapshot.volume_size if snapshot is not None else old_volume.size,
        zone_name=old_volume.zone.name,
        snapshot_id=snapshot.id if snapshot is not None else None,
        encrypted=bool(snapshot.encrypted) if snapshot is not None else old_volume.encrypted,
        volume_type=old_volume.volume_type,
        iops=old_volume.iops if old_volume.volume_type in ("io1", "io2", "gp3") else None,
        throughput=old_volume.throughput if old_volume.volume_type == "gp3" else None,
    )
    self.detach_volume(old_volume.id, instance_id, device)
    self.attach_volume(new_volume.id, instance_id, device, old_mapping.delete_on_termination)
    lineage.add(new_volume.id)
    if delete_replaced_root_volume:
        self.delete_volume(old_volume.id)

    started = _timestamp()
    task: dict[str, Any] = {
        "ReplaceRootVolumeTaskId": f"replacevol-{random_resource_id(17)}",
        "InstanceId": instance_id,
        "TaskState": "succeeded",
        "StartTime": started,
        "CompleteTime": _timestamp(),
        "Tags": [{"Key": key, "Value": value} for key, value in tags.items()],
        "DeleteReplacedRootVolume": bool(delete_replaced_root_volume),
    }
    if snapshot_id:
        task["SnapshotId"] = snapshot_id
    if image_id:
        task["ImageId"] = image_id
    _tasks(self)[task["ReplaceRootVolumeTaskId"]] = task
    return task


def describe_replace_root_volume_tasks(
    self: EC2Backend, *, task_ids: list[str], filters: dict[str, list[str]]
) -> list[dict[str, Any]]:
    for name in filters:
        if name != "instance-id":
            raise EC2ClientError("InvalidParameterValue", f"The filter '{name}' is invalid")
    tasks = list(_tasks(self).values())
    if task_ids:
        tasks = [task for task in tasks if task["ReplaceRootVolumeTaskId"] in task_ids]
    if "instance-id" in filters:
        tasks = [task for task in tasks if task["InstanceId"] in filters["instance-id"]]
    return [dict(task) for task in tasks]


def create_replace_root_volume_task_action(self: EC2Response) -> ActionResult:
    self.error_on_dryrun()
    tags = self._parse_tag_specification("replace-root-volume-task").get("replace-root-volume-task", {})
    task = self.ec2_backend.create_replace_root_volume_task(
        instance_id=self._get_param("InstanceId"),
        snapshot_id=self._get_param("SnapshotId"),
        image_id=self._get_param("ImageId"),
        delete_replaced_root_volume=bool(self._get_param("DeleteReplacedRootVolume", False)),
        tags=tags,
    )
    return ActionResult({"ReplaceRootVolumeTask": task})


def describe_replace_root_volume_tasks_action(self: EC2Response) -> ActionResult:
    self.error_on_dryrun()
    tasks = self.ec2_backend.describe_replace_root_volume_tasks(
        task_ids=self._get_param("ReplaceRootVolumeTaskIds", []) or [],
        filters=self._filters_from_querystring(),
    )
    start = int(self._get_param("NextToken") or 0)
    max_results = self._get_param("MaxResults")
    end = start + int(max_results) if max_results else len(tasks)
    result: dict[str, Any] = {"ReplaceRootVolumeTasks": tasks[start:end]}
    if end < len(tasks):
        result["NextToken"] = str(end)
    return ActionResult(result)


_INSTANCES = "moto.ec2.models.instances"
_RESPONSES = "moto.ec2.responses"
NEVER_HEALTHY_INSTANCE_STATUS = "ec2.never_healthy.instance_status"
NEVER_HEALTHY_SYSTEM_STATUS = "ec2.never_healthy.system_status"

PATCHES = (
    wraps(
        NEVER_HEALTHY_INSTANCE_STATUS,
        _INSTANCES,
        "Instance",
        "instance_status",
        "set_never_healthy: a running instance's instance status check stays initializing",
        _wrap_never_healthy,
    ),
    wraps(
        NEVER_HEALTHY_SYSTEM_STATUS,
        _INSTANCES,
        "Instance",
        "system_status",
        "set_never_healthy: a running instance's system status check stays initializing",
        _wrap_never_healthy,
    ),
    wraps(
        "ec2.snapshot_records_volume_size",
        "moto.ec2.models",
        "EC2Backend",
        "create_snapshot",
        "remember the volume's size when the snapshot is taken (moto reads the live volume)",
        _wrap_create_snapshot,
    ),
    wraps(
        "ec2.snapshot_volume_size",
        "moto.ec2.models.elastic_block_store",
        "Snapshot",
        "volume_size",
        "a snapshot's VolumeSize is the size it was taken at, not the volume's after ModifyVolume",
        _wrap_volume_size,
    ),
    wraps(
        "ec2.create_snapshots_copy_tags",
        _RESPONSES,
        "EC2Response",
        "create_snapshots",
        "CreateSnapshots honours CopyTagsFromSource=volume (moto ignores it)",
        _wrap_create_snapshots,
    ),
    adds(
        "ec2.create_replace_root_volume_task",
        "moto.ec2.models",
        "EC2Backend",
        "create_replace_root_volume_task",
        "moto 5.2.5 lacks CreateReplaceRootVolumeTask",
        create_replace_root_volume_task,
    ),
    adds(
        "ec2.describe_replace_root_volume_tasks",
        "moto.ec2.models",
        "EC2Backend",
        "describe_replace_root_volume_tasks",
        "moto 5.2.5 lacks DescribeReplaceRootVolumeTasks",
        describe_replace_root_volume_tasks,
    ),
    adds(
        "ec2.create_replace_root_volume_task_action",
        _RESPONSES,
        "EC2Response",
        "create_replace_root_volume_task",
        "route the CreateReplaceRootVolumeTask action to the backend method added above",
        create_replace_root_volume_task_action,
    ),
    adds(
        "ec2.describe_replace_root_volume_tasks_action",
        _RESPONSES,
        "EC2Response",
        "describe_replace_root_volume_tasks",
        "route the DescribeReplaceRootVolumeTasks action to the backend method added above",
        describe_replace_root_volume_tasks_action,
    ),
)
