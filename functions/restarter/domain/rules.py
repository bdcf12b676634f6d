"""The rules a restart must pass before anything on the cluster changes.

Everything here is pure: the service gathers the facts (cluster, instance types, volumes) and
these functions decide. A request that fails a rule is refused whole: nothing is half-applied.
"""

from __future__ import annotations

from collections.abc import Sequence

from restarter.domain.errors import InvalidStateError, RequestValidationError, UnsupportedChangeError
from restarter.domain.inventory import InstanceTypeInfo, SnapshotView
from restarter.domain.models import (
    RESTARTABLE_STATES,
    Cluster,
    PortMapping,
    RestartRequest,
    RestartTarget,
)

AUTO_PORT_RANGE = range(30000, 32768)

STATE_SUGGESTIONS = {
    "starting": "Wait for cluster to finish current operation",
    "stopping": "Wait for cluster to finish current operation",
    "restarting": "Wait for the restart in progress to finish, or cancel it",
}


def ensure_restartable(cluster: Cluster) -> None:
    """Only `running`, `stopped` and `error` clusters restart (the seed's INVALID_STATE)."""
    if cluster.status in RESTARTABLE_STATES and cluster.current_restart_id is None:
        return
    status = cluster.status if cluster.current_restart_id is None else "restarting"
    details: dict[str, object] = {
        "current_status": status,
        "allowed_states": list(RESTARTABLE_STATES),
        "suggestion": STATE_SUGGESTIONS.get(status, "Wait for cluster to finish current operation"),
    }
    if cluster.current_restart_id:
        details["restart_id"] = cluster.current_restart_id
    raise InvalidStateError("Cluster cannot be restarted in current state", details)


def ensure_health_checkable(cluster: Cluster) -> None:
    """An on-demand health check needs running (or errored) instances that no restart holds:
    a restart runs its own checks, and a stopped node has nothing to check."""
    if cluster.current_restart_id is None and cluster.status in ("running", "error"):
        return
    raise InvalidStateError(
        "A health check needs a running cluster that no restart holds",
        {
            "current_status": "restarting" if cluster.current_restart_id else cluster.status,
            "restart_id": cluster.current_restart_id,
            "suggestion": "The restart runs its own health checks; read them with GET /v1/clusters/{id}/health",
        },
    )


def choose_instance_type(
    current: InstanceTypeInfo,
    family: Sequence[InstanceTypeInfo],
    *,
    cpu_cores: int | None,
    memory_gb: int | None,
    gpu_count: int | None,
) -> InstanceTypeInfo:
    """The smallest type of the same family that satisfies every asked-for dimension.

    Dimensions not asked for keep at least their current value for CPU and memory, and
    exactly the current GPU count (a GPU count change must be asked for explicitly).
    """
    want_cpu = cpu_cores if cpu_cores is not None else None
    want_mem = memory_gb if memory_gb is not None else None
    want_gpu = gpu_count if gpu_count is not None else current.gpu_count
    fits = [
        t
        for t in family
        if t.gpu_count == want_gpu
        and (want_cpu is None or t.vcpus >= want_cpu)
        and (want_mem is None or t.memory_gb >= want_mem)
    ]
    if not fits:
        raise RequestValidationError(
            "No instance type in the family satisfies the requested configuration",
            {
                "field": "update_configuration",
                "family": current.family,
                "requested": {"cpu_cores": cpu_cores, "memory_gb": memory_gb, "gpu_count": gpu_count},
                "available": [
                    {"type": t.name, "cpu_cores": t.vcpus, "memory_gb": t.memory_gb, "gpu_count": t.gpu_count}
                    for t in sorted(family, key=lambda t: (t.gpu_count, t.vcpus, t.memory_gb))
                ],
            },
        )
    return min(fits, key=lambda t: (t.vcpus, t.memory_gb, t.name))


def assign_ports(existing: list[PortMapping], request: RestartRequest) -> list[PortMapping] | None:
    """Merge port mapping updates into the current ones; external port 0 gets a free port."""
    if request.port_mapping_updates is None:
        return None
    merged = {(p.internal_port, p.protocol): p for p in existing}
    for update in request.port_mapping_updates:
        merged[(update.internal_port, update.protocol)] = PortMapping(
            internal_port=update.internal_port,
            external_port=update.external_port,
            protocol=update.protocol,
            description=update.description,
            status="pending",
        )
    taken = {(p.external_port, p.protocol) for p in merged.values() if p.external_port}
    if len(taken) != len([p for p in merged.values() if p.external_port]):
        raise RequestValidationError(
            "Two port mappings use the same external port",
            {"field": "port_mapping_updates"},
        )
    result: list[PortMapping] = []
    for key in sorted(merged):
        mapping = merged[key]
        if mapping.external_port == 0:
            free = next(p for p in AUTO_PORT_RANGE if (p, mapping.protocol) not in taken)
            taken.add((free, mapping.protocol))
            mapping = mapping.model_copy(update={"external_port": free})
        result.append(mapping)
    return result


def build_target(
    cluster: Cluster,
    request: RestartRequest,
    *,
    current_type: InstanceTypeInfo,
    family: Sequence[InstanceTypeInfo],
) -> RestartTarget:
    """Validate every requested change against the cluster and compute the desired end state."""
    config = request.update_configuration
    target = RestartTarget(apply_system_updates=request.apply_system_updates)

    if config is not None and config.region is not None and config.region != cluster.region:
        raise UnsupportedChangeError(
            "Changing region needs a data migration, which a restart cannot do",
            {
                "field": "update_configuration.region",
                "current_region": cluster.region,
                "requested_region": config.region,
                "suggestion": "Create a cluster in the new region from a snapshot, then retire this one",
            },
        )

    if config is not None and config.changes_hardware():
        chosen = choose_instance_type(
            current_type,
            family,
            cpu_cores=config.cpu_cores,
            memory_gb=config.memory_gb,
            gpu_count=config.gpu_count,
        )
        if chosen.name != current_type.name:
            target.instance_type = chosen.name
            target.instance_vcpus = chosen.vcpus
            target.instance_memory_gb = chosen.memory_gb
            target.instance_gpu_count = chosen.gpu_count

    if config is not None and config.storage_gb is not None:
        current = cluster.storage_gb
        if config.storage_gb < current:
            raise UnsupportedChangeError(
                "Storage can only grow",
                {
                    "field": "update_configuration.storage_gb",
                    "current_storage_gb": current,
                    "requested_storage_gb": config.storage_gb,
                },
            )
        if config.storage_gb > current:
            target.storage_gb = config.storage_gb

    if request.update_docker_image and request.update_docker_image != cluster.container.image:
        target.image = request.update_docker_image

    if request.environment_updates:
        target.environment_keys_set = sorted(k for k, v in request.environment_updates.items() if v is not None)
        target.environment_keys_unset = sorted(k for k, v in request.environment_updates.items() if v is None)

    target.port_mappings = assign_ports(cluster.container.port_mappings, request)

    if request.restore_from_snapshot:
        target.restore_snapshot_id = request.restore_from_snapshot
        target.restore_root_snapshots = _root_snapshots(cluster, request.restore_from_snapshot)
    return target


def _root_snapshots(cluster: Cluster, snapshot_id: str) -> dict[str, str]:
    snapshot = cluster.find_snapshot(snapshot_id)
    if snapshot is None:
        raise RequestValidationError(
            "Snapshot not found for this cluster",
            {
                "field": "restore_from_snapshot",
                "snapshot_id": snapshot_id,
                "available": [s.id for s in cluster.snapshots],
            },
        )
    roots = {v.instance_id: v.device_name for v in cluster.volumes if v.is_root}
    chosen: dict[str, str] = {}
    for instance_id in cluster.instance_ids:
        device = roots.get(instance_id)
        ebs = snapshot.volume_snapshots.get(instance_id, {}).get(device or "")
        if ebs is None:
            raise RequestValidationError(
                "Snapshot does not cover the root volume of every instance",
                {"field": "restore_from_snapshot", "snapshot_id": snapshot_id, "instance_id": instance_id},
            )
        chosen[instance_id] = ebs
    return chosen


UNUSABLE_SNAPSHOT_STATES = frozenset({"error", "recoverable", "recovering"})


def ensure_snapshot_restorable(
    cluster: Cluster,
    target: RestartTarget,
    found: Sequence[SnapshotView],
    *,
    cluster_tag_key: str = "restarter:cluster",
) -> None:
    """The checkpoint a restore names must still be there, usable, and this cluster's.

    The cluster record lists its checkpoints, but the EBS snapshots behind one can be deleted
    (or, copied around by hand, belong to another cluster) since: such a restore would fail at
    the reboot, after the cluster was stopped. `found` is what the cloud has of the root
    snapshots the target restores; a snapshot without the cluster tag is not judged by it.
    """
    if not target.restore_snapshot_id:
        return
    by_id = {s.snapshot_id: s for s in found}
    wanted = sorted(set(target.restore_root_snapshots.values()))
    details: dict[str, object] = {"field": "restore_from_snapshot", "snapshot_id": target.restore_snapshot_id}
    missing = [s for s in wanted if s not in by_id]
    if missing:
        raise RequestValidationError("Snapshot no longer exists", {**details, "missing_volume_snapshots": missing})
    unusable = [s for s in wanted if by_id[s].state in UNUSABLE_SNAPSHOT_STATES]
    if unusable:
        raise RequestValidationError("Snapshot cannot be restored", {**details, "unusable_volume_snapshots": unusable})
    foreign = {
        s: owner for s in wanted if (owner := by_id[s].tags.get(cluster_tag_key)) is not None and owner != cluster.id
    }
    if foreign:
        raise RequestValidationError(
            "Snapshot belongs to another cluster", {**details, "owners": dict(sorted(foreign.items()))}
        )


def describe_changes(cluster: Cluster, request: RestartRequest, target: RestartTarget) -> dict[str, list[str]]:
    """The seed's `"field: old -> new"` lines, by the part of the restart that applies them.

    Environment values are never shown, only the names of the variables.
    """
    lines: dict[str, list[str]] = {}
    if target.restore_snapshot_id:
        lines["restore"] = [f"root_volume: current -> {target.restore_snapshot_id}"]
    if target.apply_system_updates:
        lines["system_updates"] = ["system_updates: pending -> installed"]
    if target.storage_gb is not None:
        lines["storage"] = [f"storage_gb: {cluster.storage_gb} -> {target.storage_gb}"]
    if target.instance_type:
        hardware = [f"instance_type: {cluster.instance_type} -> {target.instance_type}"]
        config = request.update_configuration
        if config is not None and config.memory_gb is not None:
            hardware.append(f"memory_gb: {cluster.memory_gb} -> {target.instance_memory_gb}")
        if config is not None and config.cpu_cores is not None:
            hardware.append(f"cpu_cores: {cluster.vcpus} -> {target.instance_vcpus}")
        if config is not None and config.gpu_count is not None:
            hardware.append(f"gpu_count: {cluster.gpu_count} -> {target.instance_gpu_count}")
        lines["instance_type"] = hardware
    container: list[str] = []
    if target.image:
        container.append(f"docker_image: {cluster.container.image} -> {target.image}")
    for key in target.environment_keys_set:
        old = "<redacted>" if key in cluster.container.environment_keys else "(unset)"
        container.append(f"environment.{key}: {old} -> <redacted>")
    for key in target.environment_keys_unset:
        container.append(f"environment.{key}: <redacted> -> (unset)")
    if target.port_mappings is not None:
        before = {(p.internal_port, p.protocol): p.external_port for p in cluster.container.port_mappings}
        for p in target.port_mappings:
            old_ext = before.get((p.internal_port, p.protocol))
            if old_ext != p.external_port:
                old = str(old_ext) if old_ext is not None else "(none)"
                container.append(f"port_mapping.{p.protocol}/{p.internal_port}: {old} -> {p.external_port}")
    if container:
        lines["container"] = container
    return lines
