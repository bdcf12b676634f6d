"""Scheduled rollouts: manage a tenant's schedules, and start a rollout when one fires.

Schedules live in EventBridge Scheduler (one group per tenant, see `domain.schedules`); this
service adds the rules around them: a schedule's rollout is validated when it is created (and
explicit cluster ids must be the tenant's), every change is audited, and a firing becomes at
most one rollout however often it is delivered.
"""

from __future__ import annotations

from restarter.adapters.scheduler import ScheduleGateway
from restarter.domain.rollouts import RolloutRecord, select_targets
from restarter.domain.schedules import ScheduleFiring, ScheduleRequest, ScheduleView, schedule_group
from restarter.observability import logger
from restarter.services.rollouts import create_rollout
from restarter.wiring import Dependencies, RolloutDependencies

# ------------------------------------------------------------------ managing schedules


def create_schedule(
    deps: Dependencies, gateway: ScheduleGateway, tenant_id: str, request: ScheduleRequest, requested_by: str
) -> tuple[ScheduleView, list[str]]:
    """Create the schedule; answers it and the clusters it would cover if it fired now."""
    clusters = [c for c in deps.clusters.list_all() if c.tenant_id == tenant_id]
    covered = [c.id for c in select_targets(request.rollout, clusters)]  # unknown explicit ids: 404
    group = schedule_group(tenant_id)
    gateway.ensure_group(group)
    gateway.create(group, request, tenant_id)
    deps.audit.record(
        f"schedule:{group}/{request.name}",
        "schedule.created",
        requested_by,
        "accepted",
        deps.clock.now(),
        schedule_expression=request.schedule_expression,
        timezone=request.timezone,
        clusters_now=len(covered),
    )
    logger.info("schedule created", schedule=request.name, group=group, clusters_now=len(covered))
    return gateway.get(group, request.name), covered


def get_schedule(gateway: ScheduleGateway, tenant_id: str, name: str) -> ScheduleView:
    return gateway.get(schedule_group(tenant_id), name)


def list_schedules(gateway: ScheduleGateway, tenant_id: str) -> list[ScheduleView]:
    group = schedule_group(tenant_id)
    return [gateway.get(group, name) for name in gateway.list_names(group)]


def delete_schedule(deps: Dependencies, gateway: ScheduleGateway, tenant_id: str, name: str, requested_by: str) -> None:
    """Future firings stop; rollouts it already started go on (cancel their restarts to stop them)."""
    group = schedule_group(tenant_id)
    gateway.delete(group, name)
    deps.audit.record(f"schedule:{group}/{name}", "schedule.deleted", requested_by, "accepted", deps.clock.now())
    logger.info("schedule deleted", schedule=name, group=group)


# ------------------------------------------------------------------ a firing


def start_scheduled_rollout(rd: RolloutDependencies, firing: ScheduleFiring) -> tuple[RolloutRecord, bool]:
    """The rollout of this firing: targets resolved now, the window from the scheduled time.
    A repeated delivery of the same firing answers the rollout it already started."""
    record, created = create_rollout(
        rd,
        firing.rollout_spec(),
        requested_by=f"schedule:{firing.schedule_name}",
        tenant_id=firing.tenant_id,
        trigger="schedule",
        rollout_id=firing.rollout_id(),
    )
    logger.info(
        "scheduled rollout started" if created else "scheduled firing delivered again; rollout already started",
        schedule=firing.schedule_name,
        scheduled_time=firing.scheduled_time.isoformat(),
        attempt=firing.attempt,
        rollout_id=record.rollout_id,
        clusters=len(record.results),
    )
    return record, created
