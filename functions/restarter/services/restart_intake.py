"""Accepting a restart: validate, plan, lock, record, start the execution.

Either the whole intake happens, or nothing stays behind: a failure after the lock is taken
releases it, puts the cluster back, and marks the record failed.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from restarter.domain.cost import HARDWARE_DIMENSIONS, cost_impact, load_price_catalog
from restarter.domain.errors import NotFoundError, RestarterError
from restarter.domain.models import (
    Cluster,
    ConfigurationUpdates,
    NodeAction,
    RestartError,
    RestartRecord,
    RestartRequest,
    Trigger,
    format_time,
)
from restarter.domain.planning import (
    INTAKE_STEPS,
    PHASE_DESCRIPTIONS,
    estimate_completion,
    plan_phases,
    progress_at,
)
from restarter.domain.rules import build_target, describe_changes, ensure_restartable, ensure_snapshot_restorable
from restarter.domain.validation import parse_restart_request
from restarter.observability import logger, metrics
from restarter.wiring import Dependencies

# The lock outlives the deadline by the time cleanup may need to put things back.
LOCK_MARGIN = timedelta(minutes=30)


def new_restart_id() -> str:
    return f"rst_{secrets.token_hex(8)}"


def pending_environment_parameter(restart_id: str) -> str:
    return f"/restarter/restarts/{restart_id}/environment"


def cluster_environment_parameter(cluster_id: str) -> str:
    return f"/restarter/clusters/{cluster_id}/environment"


def load_cluster(deps: Dependencies, cluster_id: str, tenant_id: str | None = None) -> Cluster:
    cluster = deps.clusters.get(cluster_id)
    if cluster is None or (tenant_id is not None and cluster.tenant_id != tenant_id):
        raise NotFoundError("Cluster not found", {"cluster_id": cluster_id})
    return cluster


def accept_restart(
    deps: Dependencies,
    cluster_id: str,
    payload: Any,
    *,
    trigger: Trigger,
    requested_by: str,
    tenant_id: str | None = None,
    node_action: NodeAction | None = None,
) -> RestartRecord:
    """Validate and start one restart. Every outcome, accepted or refused, is audited.

    `node_action`: recovery's rung of the node ladder (not a request field: only recovery sets it)."""
    try:
        request = parse_restart_request(payload)
        record = _accept(
            deps,
            cluster_id,
            request,
            trigger=trigger,
            requested_by=requested_by,
            tenant_id=tenant_id,
            node_action=node_action,
        )
    except RestarterError as exc:
        _audit(
            deps,
            cluster_id,
            requested_by,
            "refused",
            trigger=trigger,
            error_code=exc.code,
            error=exc.message,
            details=exc.details,
        )
        raise
    _audit(
        deps,
        cluster_id,
        requested_by,
        "accepted",
        trigger=trigger,
        restart_id=record.id,
        reason=record.reason,
        request=record.request,
        changes=record.configuration_updates.pending,
    )
    return record


def _audit(deps: Dependencies, cluster_id: str, requested_by: str, outcome: str, **details: Any) -> None:
    """Write the audit entry of a restart request without changing its outcome.

    Once the execution has started, nothing may turn the answer into an error: the caller (a
    queue, an alarm rule) would deliver the request again and restart the cluster twice. A
    refused request keeps its own error. A lost entry is logged with the restart id and counted;
    the restart record itself keeps requester, reason and changes.
    """
    try:
        deps.audit.record(cluster_id, "restart.requested", requested_by, outcome, deps.clock.now(), **details)
    except RestarterError as exc:
        logger.error(
            "audit entry not written",
            cluster_id=cluster_id,
            outcome=outcome,
            restart_id=details.get("restart_id"),
            error_code=exc.code,
        )
        metrics.add_metric(name="AuditEntriesLost", unit=MetricUnit.Count, value=1)


def _accept(
    deps: Dependencies,
    cluster_id: str,
    request: RestartRequest,
    *,
    trigger: Trigger,
    requested_by: str,
    tenant_id: str | None,
    node_action: NodeAction | None = None,
) -> RestartRecord:
    cluster = load_cluster(deps, cluster_id, tenant_id)
    ensure_restartable(cluster)

    current_type = deps.provider.describe_instance_type(cluster.instance_type)
    config = request.update_configuration
    family = (
        deps.provider.instance_types_in_family(current_type.family)
        if config is not None and config.changes_hardware()
        else []
    )
    target = build_target(cluster, request, current_type=current_type, family=family)
    if target.restore_root_snapshots:  # refused before any lock or record, like every other rule
        found = deps.provider.describe_snapshots(sorted(set(target.restore_root_snapshots.values())))
        ensure_snapshot_restorable(cluster, target, found, cluster_tag_key=deps.settings.cluster_tag_key)
    now = deps.clock.now()
    restart_id = new_restart_id()
    plan = plan_phases(request, target, cluster_running=cluster.status != "stopped")
    deadline = now + timedelta(minutes=request.timeout_minutes)
    change_lines = describe_changes(cluster, request, target)
    impact = cost_impact(
        load_price_catalog(),
        region=cluster.region,
        instance_count=len(cluster.instance_ids),
        old_type=cluster.instance_type,
        new_type=target.instance_type,
        changed=[name for name in HARDWARE_DIMENSIONS if config is not None and getattr(config, name) is not None],
    )

    deps.locks.acquire(cluster.id, restart_id, now, deadline + LOCK_MARGIN)
    record: RestartRecord | None = None
    try:
        if deps.executions is None:
            raise RestarterError("No state machine is configured", {"setting": "STATE_MACHINE_ARN"})
        if request.environment_updates:
            target.environment_parameter = pending_environment_parameter(restart_id)
            deps.provider.put_environment(
                target.environment_parameter,
                {k: v for k, v in request.environment_updates.items() if v is not None},
            )
        first_phase = plan[len(INTAKE_STEPS)]
        record = RestartRecord(
            id=restart_id,
            cluster_id=cluster.id,
            cluster_name=cluster.name,
            tenant_id=cluster.tenant_id,
            restart_type=request.restart_type,
            trigger=trigger,
            requested_by=requested_by,
            node_action=node_action,
            reason=request.restart_reason,
            request=request.redacted(),
            plan=plan,
            target=target,
            previous_cluster_status=cluster.status,
            restart_initiated_at=format_time(now),
            estimated_completion_time=format_time(estimate_completion(now, plan, request)),
            deadline=format_time(deadline),
            progress=progress_at(plan, first_phase),
            configuration_updates=ConfigurationUpdates(
                pending=[line for lines in change_lines.values() for line in lines]
            ),
            change_lines=change_lines,
            old_hourly_rate=impact.old_hourly_rate,
            new_hourly_rate=impact.new_hourly_rate,
            rate_change_reason=impact.rate_change_reason,
        )
        # Recorded before the start: once the execution runs, it owns the record and writes it.
        record.execution_arn = deps.executions.execution_arn(restart_id)
        deps.restarts.put(record, None)
        deps.clusters.put(
            cluster.model_copy(
                update={
                    "status": "restarting",
                    "current_restart_id": restart_id,
                    "updated_at": record.restart_initiated_at,
                }
            )
        )
        started_arn = deps.executions.start(
            restart_id,
            {
                "restart_id": restart_id,
                "cluster_id": cluster.id,
                "step": {"done": True, "next": first_phase, "attempt": 0},
                # the state machine's guard Choices (`NeedsCheckpoint?`, ...) read which phases run
                "plan": {phase: phase in plan for phase in PHASE_DESCRIPTIONS if phase not in INTAKE_STEPS},
            },
        )
        if started_arn != record.execution_arn:
            logger.warning("execution ARN differs from the predicted one", restart_id=restart_id)
    except Exception as exc:
        _undo_intake(deps, cluster, restart_id, record, exc)
        raise
    logger.info(
        "restart accepted",
        restart_id=restart_id,
        cluster_id=cluster.id,
        restart_type=record.restart_type,
        trigger=trigger,
        plan=plan,
    )
    deps.events.publish(
        "Restart Requested",
        {
            "restart_id": restart_id,
            "cluster_id": cluster.id,
            "restart_type": record.restart_type,
            "trigger": trigger,
            "plan": plan,
            "estimated_completion_time": record.estimated_completion_time,
        },
    )
    return record


def _undo_intake(
    deps: Dependencies, cluster: Cluster, restart_id: str, record: RestartRecord | None, exc: Exception
) -> None:
    """Put everything back after a failed intake; the lock is released last."""
    logger.warning("restart intake failed, undoing", restart_id=restart_id, error_type=type(exc).__name__)
    deps.clusters.put(cluster)
    if record is not None:
        stored = deps.restarts.get(restart_id)
        if stored is not None:
            failed, version = stored
            failed.status = "failed"
            failed.error = RestartError(
                code=getattr(exc, "code", "INTERNAL"),
                message="The restart could not be started",
                phase="validating",
            )
            failed.restart_completed_at = format_time(deps.clock.now())
            deps.restarts.put(failed, version)
    if record is not None and record.target.environment_parameter:
        try:
            deps.provider.delete_environment(record.target.environment_parameter)
        except RestarterError:
            logger.warning("pending environment not deleted", restart_id=restart_id)
    deps.locks.release(cluster.id, restart_id)
