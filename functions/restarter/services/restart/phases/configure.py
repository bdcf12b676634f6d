"""updating_configuration: restore root volumes, patch, grow storage, change the type, stage the container.

Each part runs to its end before the next starts and is marked done in the phase's state, so a
retried step never repeats a finished part; within a part, every action on an instance or a
volume is recorded as it is issued.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import Field

from restarter.domain.errors import PhaseFailedError
from restarter.services.restart.context import PhaseContext, mark_applied, start_instances
from restarter.services.restart.state import PhaseState, StoredState
from restarter.services.restart_intake import cluster_environment_parameter

FAILED_ROOT_VOLUME_TASK_STATES = ("failed", "failed-detached")
# `optimizing` already serves the new size.
GROWN_VOLUME_STATES = ("optimizing", "completed")


class RestoreState(StoredState):
    # instance_id -> root volume replacement task id
    tasks: dict[str, str] = Field(default_factory=dict)


class SystemUpdatesState(StoredState):
    command_id: str | None = None
    instances: list[str] = Field(default_factory=list)


class StorageState(StoredState):
    # the volumes to grow, decided once before any volume changes (None: not decided yet)
    volumes: list[str] | None = None
    requested: list[str] = Field(default_factory=list)


class ConfigureState(PhaseState):
    restore: RestoreState = Field(default_factory=RestoreState)
    restore_done: bool = False
    system_updates: SystemUpdatesState = Field(default_factory=SystemUpdatesState)
    system_updates_done: bool = False
    storage: StorageState = Field(default_factory=StorageState)
    storage_done: bool = False
    instance_type_done: bool = False
    container_done: bool = False


ConfigureContext = PhaseContext[ConfigureState]


def updating_configuration(ctx: ConfigureContext) -> bool:
    target = ctx.record.target
    parts: tuple[tuple[bool, str, Callable[[ConfigureContext], bool]], ...] = (
        (bool(target.restore_root_snapshots), "restore", restore_root_volumes),
        (target.apply_system_updates, "system_updates", apply_system_updates),
        (target.storage_gb is not None, "storage", grow_storage),
        (target.changes_instance_type(), "instance_type", change_instance_type),
        (target.changes_container(), "container", stage_container),
    )
    for wanted, name, part in parts:
        done_flag = f"{name}_done"
        if not wanted or getattr(ctx.state, done_flag):
            continue
        if not part(ctx):
            return False
        setattr(ctx.state, done_flag, True)
        if name != "container":  # container lines count as applied once the services run it
            mark_applied(ctx.record, name)
    return True


def restore_root_volumes(ctx: ConfigureContext) -> bool:
    tasks = ctx.state.restore.tasks
    wanted = ctx.record.target.restore_root_snapshots
    missing = {iid: snap for iid, snap in wanted.items() if iid not in tasks}
    if missing:  # recorded task by task: a retried call never starts a second task for an instance
        for instance_id, snapshot_id in missing.items():
            tasks[instance_id] = ctx.provider.replace_root_volume(instance_id, snapshot_id)
        return False
    for iid, task_id in tasks.items():
        task_state = ctx.provider.replace_root_volume_states(iid, [task_id]).get(task_id, "pending")
        if task_state in FAILED_ROOT_VOLUME_TASK_STATES:
            raise PhaseFailedError("Root volume replacement failed", {"instance_id": iid, "task_id": task_id})
        if task_state != "succeeded":
            return False
    ctx.record.changes.replaced_root_volumes = dict(tasks)
    return True


def apply_system_updates(ctx: ConfigureContext) -> bool:
    sub = ctx.state.system_updates
    instances = ctx.instances()
    if sub.command_id is None:
        stopped = [i.instance_id for i in instances if i.state == "stopped"]
        if stopped:  # patching needs running instances: a stopped cluster is started first
            start_instances(ctx, stopped)
            return False
        if not all(i.state == "running" for i in instances):
            return False
        sub.instances = [i.instance_id for i in instances]
        sub.command_id = ctx.provider.run_patch_baseline(sub.instances)
        return False
    if not ctx.command_finished(sub.command_id, sub.instances, "updating_configuration", "System updates failed"):
        return False
    ctx.record.changes.system_updates_applied = True
    return True


def grow_storage(ctx: ConfigureContext) -> bool:
    sub, record = ctx.state.storage, ctx.record
    size = record.target.storage_gb or 0
    if sub.volumes is None:  # decided once, before any volume changes
        smaller = [v for v in ctx.cluster.data_volumes() if v.size_gb < size]
        sub.volumes = [v.volume_id for v in smaller]
        sub.requested = []
        for volume in smaller:
            record.changes.grown_volumes[volume.volume_id] = volume.size_gb
    if not sub.volumes:
        return True
    missing = [v for v in sub.volumes if v not in sub.requested]
    if missing:  # recorded volume by volume: a retry after a throttled call grows only the rest
        for volume_id in missing:
            ctx.provider.grow_volume(volume_id, size)
            sub.requested.append(volume_id)
        return False
    states = ctx.provider.volume_modification_states(sub.volumes)
    if any(states.get(v) == "failed" for v in sub.volumes):
        raise PhaseFailedError("Volume modification failed", {"volumes": sub.volumes})
    return all(states.get(v) in GROWN_VOLUME_STATES for v in sub.volumes)


def change_instance_type(ctx: ConfigureContext) -> bool:
    """Stop each instance of another type, then change its type; done when every instance has it."""
    record = ctx.record
    wanted = record.target.instance_type or ctx.cluster.instance_type
    pending = False
    for inst in ctx.instances():
        if inst.instance_type == wanted:
            continue
        record.changes.previous_instance_types.setdefault(inst.instance_id, inst.instance_type)
        pending = True
        if inst.state == "running":
            ctx.start_downtime()
            ctx.provider.stop([inst.instance_id], force=False)
        elif inst.state == "stopped":
            ctx.provider.modify_instance_type(inst.instance_id, wanted)
    return not pending


def stage_container(ctx: ConfigureContext) -> bool:
    """Write the desired container spec; the services start with it in `starting_services`."""
    record, cluster, provider = ctx.record, ctx.cluster, ctx.provider
    target = record.target
    if record.changes.previous_container is None:
        record.changes.previous_container = cluster.container.model_copy(deep=True)
    spec = cluster.container.model_copy(deep=True)
    if target.image:
        spec.image = target.image
    if target.port_mappings is not None:
        spec.port_mappings = [p.model_copy() for p in target.port_mappings]
    if target.environment_keys_set or target.environment_keys_unset:
        parameter = spec.environment_parameter or cluster_environment_parameter(cluster.id)
        values = provider.get_environment(parameter, spec.environment_version)
        if target.environment_parameter:
            values.update(provider.get_environment(target.environment_parameter))
        for key in target.environment_keys_unset:
            values.pop(key, None)
        spec.environment_parameter = parameter
        spec.environment_version = provider.put_environment(parameter, values)
        spec.environment_keys = sorted(values)
    cluster.container = spec
    return True
