"""Cleanup after a failure: put back what the restart changed and bring the services back.

What is put back: the instance type, the container spec (and its environment version). What
cannot be put back (grown volumes, installed updates, restored root volumes) is kept and said
in the record's rollback notes (see domain/outcome.py).
"""

from __future__ import annotations

from pydantic import Field

from restarter.domain import outcome
from restarter.domain.errors import InsufficientCapacityError
from restarter.domain.inventory import InstanceView
from restarter.services.restart.context import PhaseContext, close_record
from restarter.services.restart.state import PhaseState

CLEANUP_STATE_KEY = "cleanup"


class CleanupState(PhaseState):
    started_at: str | None = None
    gave_up: bool = False
    reverted_instance_type: bool = False
    container_reverted: bool = False
    services_command: str | None = None
    instances: list[str] = Field(default_factory=list)
    services_restored: bool = False
    # instances EC2 had no capacity to start again (InsufficientInstanceCapacity): left stopped
    left_stopped: list[str] = Field(default_factory=list)


CleanupContext = PhaseContext[CleanupState]


def roll_back(ctx: CleanupContext) -> bool:
    """One step of undoing; True once there is nothing left to wait for."""
    instances = ctx.instances()
    if not _revert_instance_types(ctx, instances):
        return False
    _revert_container(ctx)
    return _restore_services(ctx, instances)


def _revert_instance_types(ctx: CleanupContext, instances: list[InstanceView]) -> bool:
    """Each instance back to the type it had: stopped first, then changed. True when none differs."""
    previous = ctx.record.changes.previous_instance_types
    to_revert = {
        i.instance_id: previous[i.instance_id]
        for i in instances
        if i.instance_id in previous and i.instance_type != previous[i.instance_id]
    }
    if not to_revert:
        return True
    for inst in instances:
        if inst.instance_id not in to_revert:
            continue
        if inst.state == "running":
            ctx.provider.stop([inst.instance_id], force=False)
        elif inst.state == "stopped":
            ctx.provider.modify_instance_type(inst.instance_id, to_revert[inst.instance_id])
    ctx.state.reverted_instance_type = True
    return False


def _revert_container(ctx: CleanupContext) -> None:
    """The container spec back to what it was, with the environment it had (as a new version)."""
    previous = ctx.record.changes.previous_container
    if previous is None or ctx.state.container_reverted:
        return
    cluster, provider = ctx.cluster, ctx.provider
    if previous.environment_parameter and previous.environment_version != cluster.container.environment_version:
        values = provider.get_environment(previous.environment_parameter, previous.environment_version)
        version = provider.put_environment(previous.environment_parameter, values)
        previous = previous.model_copy(update={"environment_version": version})
    cluster.container = previous
    ctx.state.container_reverted = True


def _restore_services(ctx: CleanupContext, instances: list[InstanceView]) -> bool:
    """Instances that ran before run again, with the services they had."""
    state, cluster = ctx.state, ctx.cluster
    if ctx.record.previous_cluster_status == "stopped":
        return True
    stopped = [i.instance_id for i in instances if i.state == "stopped"]
    if stopped and not state.left_stopped:
        try:
            ctx.provider.start(stopped)
        except InsufficientCapacityError:
            # no capacity to bring them back either: they stay stopped, and the record says so
            state.left_stopped = stopped
            return True
        return False
    if state.left_stopped:
        return True
    if not ctx.instances_ready():
        return False
    if not state.services_command:
        state.services_command = ctx.start_services(cluster.container)
        state.instances = list(cluster.instance_ids)
        return False
    invocations = ctx.provider.command_invocations(state.services_command, state.instances)
    if any(i.pending for i in invocations):
        return False
    state.services_restored = all(i.status == "Success" for i in invocations)
    return True


def conclude_failure(ctx: CleanupContext) -> None:
    """Set the terminal status, the notes and the cluster's status once cleanup is over."""
    record, cluster, state = ctx.record, ctx.cluster, ctx.state
    changes = record.changes
    record.status = outcome.status_after_cleanup(
        record.error.code if record.error else None, changes, gave_up=state.gave_up
    )
    record.rollback_notes.extend(outcome.rollback_notes(changes))
    if state.left_stopped:
        record.rollback_notes.append(outcome.left_stopped_note(state.left_stopped, cluster.instance_type))
    record.configuration_updates.applied = outcome.applied_after_rollback(
        record.configuration_updates.applied, record.change_lines, changes
    )
    close_record(record, ctx.now())
    back_to_stopped = record.previous_cluster_status == "stopped" and not state.gave_up
    cluster.status = outcome.cluster_status_after_failure(
        record.previous_cluster_status,
        gave_up=state.gave_up,
        services_restored=state.services_restored,
        all_stopped=(back_to_stopped or bool(state.left_stopped))
        and all(i.state == "stopped" for i in ctx.instances()),
        left_stopped=bool(state.left_stopped),
    )
    cluster.volumes = ctx.volumes()
    cluster.current_restart_id = None
