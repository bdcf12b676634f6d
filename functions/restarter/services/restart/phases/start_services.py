"""starting_services: once the instances pass their checks, start the workload with the staged spec."""

from __future__ import annotations

from restarter.domain.models import format_time
from restarter.services.restart.context import PhaseContext, mark_applied
from restarter.services.restart.state import CommandState


class StartServicesState(CommandState):
    pass


def starting_services(ctx: PhaseContext[StartServicesState]) -> bool:
    state, record, cluster = ctx.state, ctx.record, ctx.cluster
    if state.command_id is None:
        if not ctx.instances_ready():
            return False
        state.command_id = ctx.start_services(cluster.container)
        state.instances = list(cluster.instance_ids)
        return False
    if not ctx.command_finished(state.command_id, state.instances, "starting_services", "Starting services failed"):
        return False
    record.changes.container_applied = record.changes.previous_container is not None
    for mapping in cluster.container.port_mappings:
        mapping.status = "active"
    record.downtime_ended_at = format_time(ctx.now())
    mark_applied(record, "container")
    return True
