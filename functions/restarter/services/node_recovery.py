"""Alarm recovery's GPU side: the node ladder's rung, the fleet circuit breaker, replacement.

`alarm_recovery` asks here (1) which rung the cluster's last health findings and its previous
recovery call for, (2) whether the tenant's breaker lets a recovery start now, and (3) what to
do when the ladder's top is reached. A recovery restart that failed continues the ladder from
the ended execution (`continue_ladder`): an alarm does not fire again while it stays in ALARM.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from restarter.domain.circuit_breaker import (
    BreakerPolicy,
    BreakerState,
    PausedRecovery,
    close_by_operator,
    clusters_recovering,
    evaluate_breaker,
    pause,
)
from restarter.domain.errors import ConflictError
from restarter.domain.gpu.records import NodeHealthRecord, worst_of
from restarter.domain.models import Cluster, RestartRecord, format_time, parse_time
from restarter.domain.node_recovery import NEEDS_REPLACEMENT_EVENT, RungDecision, choose_rung, holds_local_state
from restarter.domain.recovery import (
    FAILED_RESTART_STATUSES,
    AlarmTransition,
    RecoveryEntry,
    RecoveryOutcome,
    within_cooldown,
)
from restarter.observability import logger
from restarter.wiring import AlarmRecoveryDependencies

CIRCUIT_OPEN_EVENT = "Recovery Circuit Open"
CIRCUIT_CLOSED_EVENT = "Recovery Circuit Closed"
CONTINUE_SUFFIX = ":ladder"
RESUME_SUFFIX = ":resumed"
# a health report older than this does not pick a rung (the node may have changed since)
HEALTH_REPORT_MAX_AGE = timedelta(hours=24)
# optimistic writes of the breaker state: tries before giving up on this delivery (it is retried)
BREAKER_WRITE_TRIES = 5


def breaker_policy(service: AlarmRecoveryDependencies) -> BreakerPolicy:
    settings = service.deps.settings
    return BreakerPolicy(
        share=settings.breaker_share,
        min_clusters=settings.breaker_min_clusters,
        window=timedelta(minutes=settings.breaker_window_minutes),
    )


# ---------------------------------------------------------------- the rung


def choose_node_rung(
    service: AlarmRecoveryDependencies,
    cluster: Cluster,
    previous: RecoveryEntry | None,
    previous_status: str | None,
    now: datetime,
    cooldown: timedelta,
) -> RungDecision | None:
    """None when neither the GPUs' last health report nor a previous rung calls for the ladder."""
    worst = worst_of(current_reports(service, cluster, now))
    climbing = previous is not None and (
        previous_status in FAILED_RESTART_STATUSES or within_cooldown(previous, now, cooldown)
    )
    return choose_rung(
        worst,
        previous.rung if previous is not None else None,
        climb_from_previous=climbing,
        local_state=holds_local_state(cluster.labels),
    )


def current_reports(service: AlarmRecoveryDependencies, cluster: Cluster, now: datetime) -> list[NodeHealthRecord]:
    """The reports recovery goes by: of the cluster's instances today, taken within a day."""
    since = now - HEALTH_REPORT_MAX_AGE
    return [
        r
        for r in service.deps.health.reports(cluster.id)
        if r.instance_id in cluster.instance_ids and parse_time(r.taken_at) >= since
    ]


def needs_replacement(
    service: AlarmRecoveryDependencies, alarm: AlarmTransition, cluster: Cluster, decision: RungDecision
) -> RecoveryOutcome:
    """The top of the ladder: announce it and mark the cluster `error` with the reason."""
    deps = service.deps
    if cluster.current_restart_id is not None:  # never mark a cluster that a restart holds
        return RecoveryOutcome(
            "refused",
            alarm.alarm_name,
            alarm.event_id,
            cluster_id=cluster.id,
            rung="replace",
            reasons=[*decision.reasons, f"restart {cluster.current_restart_id} is in progress"],
            error_code="INVALID_STATE",
        )
    reason = decision.refused or "the node ladder is exhausted: the GPU node needs replacement"
    findings = [
        {"instance_id": r.instance_id, "code": f.code, "action": f.action, "gpu_index": f.gpu_index}
        for r in current_reports(service, cluster, deps.clock.now())
        for f in r.findings
        if f.action != "report"
    ]
    deps.clusters.put(
        cluster.model_copy(
            update={"status": "error", "status_reason": reason, "updated_at": format_time(deps.clock.now())}
        )
    )
    deps.events.publish(
        NEEDS_REPLACEMENT_EVENT,
        {
            "cluster_id": cluster.id,
            "cluster_name": cluster.name,
            "instance_ids": cluster.instance_ids,
            "alarm_name": alarm.alarm_name,
            "event_id": alarm.event_id,
            "reason": reason,
            "findings": findings,
        },
        [alarm.alarm_arn] if alarm.alarm_arn else [],
    )
    logger.warning("gpu node needs replacement", cluster_id=cluster.id, reason=reason)
    return RecoveryOutcome(
        "replacement_needed",
        alarm.alarm_name,
        alarm.event_id,
        cluster_id=cluster.id,
        rung="replace",
        reasons=list(decision.reasons),
    )


# ---------------------------------------------------------------- the fleet circuit breaker


def breaker_admits(
    service: AlarmRecoveryDependencies, alarm: AlarmTransition, cluster: Cluster, now: datetime
) -> RecoveryOutcome | None:
    """None when the recovery may start; else the `paused` answer (the breaker is or just went open)."""
    policy = breaker_policy(service)
    deps = service.deps
    tenant = [c for c in deps.clusters.list_all() if c.tenant_id == cluster.tenant_id]
    entries = [e for c in tenant for e in service.recoveries.history(c.id, now - policy.window)]
    recovering = clusters_recovering(entries, now, policy.window)
    for _ in range(BREAKER_WRITE_TRIES):
        stored = service.breaker.get(cluster.tenant_id)
        decision = evaluate_breaker(
            stored,
            policy,
            tenant_id=cluster.tenant_id,
            total_clusters=len(tenant),
            recovering=recovering,
            cluster_id=cluster.id,
            now=now,
        )
        state = decision.state
        if not decision.allow:
            paused = PausedRecovery(
                cluster_id=cluster.id,
                event_id=alarm.event_id,
                alarm_name=alarm.alarm_name,
                alarm_arn=alarm.alarm_arn,
                paused_at=format_time(now),
                reasons=[decision.reason],
            )
            state = pause(state, paused)
        if not service.breaker.put(state, stored.version if stored else None):
            continue
        if decision.opens:
            _publish_breaker(service, CIRCUIT_OPEN_EVENT, state, decision.reason)
        if decision.closes:
            _publish_breaker(service, CIRCUIT_CLOSED_EVENT, state, decision.reason)
        if decision.allow:
            return None
        logger.warning("recovery paused by the circuit breaker", cluster_id=cluster.id, reason=decision.reason)
        return RecoveryOutcome(
            "paused", alarm.alarm_name, alarm.event_id, cluster_id=cluster.id, reasons=[decision.reason]
        )
    raise ConflictError(
        "The recovery circuit breaker is being updated concurrently; retry", {"tenant": cluster.tenant_id}
    )


def close_breaker(
    service: AlarmRecoveryDependencies, tenant_id: str, actor: str
) -> tuple[BreakerState, list[RecoveryOutcome]]:
    """An operator closes the breaker: paused recoveries are started again, in order (each one
    through the breaker, which holds closed for one window after an operator's close)."""
    from restarter.services.alarm_recovery import recover_from_alarm

    policy = breaker_policy(service)
    for _ in range(BREAKER_WRITE_TRIES):
        stored = service.breaker.get(tenant_id) or BreakerState(tenant_id=tenant_id)
        closed, paused = close_by_operator(stored, actor=actor, now=service.deps.clock.now(), policy=policy)
        if service.breaker.put(closed, stored.version if stored.version else None):
            break
    else:
        raise ConflictError("The recovery circuit breaker is being updated concurrently; retry", {"tenant": tenant_id})
    _publish_breaker(service, CIRCUIT_CLOSED_EVENT, closed, f"closed by {actor}")
    resumed = []
    for item in paused:
        alarm = AlarmTransition(
            event_id=f"{item.event_id}{RESUME_SUFFIX}",
            alarm_name=item.alarm_name,
            alarm_arn=item.alarm_arn,
            state="ALARM",
            previous_state="OK",
            reason="resumed after the recovery circuit was closed",
            dimensions=({"ClusterId": item.cluster_id},),
        )
        resumed.append(recover_from_alarm(service, alarm))
    latest = service.breaker.get(tenant_id) or closed
    return latest, resumed


def breaker_state(service: AlarmRecoveryDependencies, tenant_id: str) -> BreakerState:
    return service.breaker.get(tenant_id) or BreakerState(tenant_id=tenant_id)


def _publish_breaker(service: AlarmRecoveryDependencies, detail_type: str, state: BreakerState, reason: str) -> None:
    service.deps.events.publish(
        detail_type,
        {
            "tenant_id": state.tenant_id,
            "state": state.state,
            "reason": reason,
            "recovering_clusters": state.recovering_clusters,
            "total_clusters": state.total_clusters,
            "limit": state.limit,
            "paused": [p.cluster_id for p in state.paused],
        },
    )


# ---------------------------------------------------------------- the ladder after a failed rung


def continue_after(service: AlarmRecoveryDependencies, status: str, ended: dict[str, Any]) -> dict[str, Any]:
    """An ended execution's answer, with the next rung when the state machine had concluded a
    failed rung of the ladder (its own FAILED end; an alarm does not fire twice)."""
    if status != "FAILED" or ended.get("reason") != "restart already concluded":
        return ended
    loaded = service.deps.restarts.get(str(ended["restart_id"]))
    outcome = continue_ladder(service, loaded[0]) if loaded else None
    return {**ended, "recovery": outcome.to_dict()} if outcome is not None else ended


def continue_ladder(service: AlarmRecoveryDependencies, record: RestartRecord) -> RecoveryOutcome | None:
    """A recovery restart of the node ladder ended without fixing the node: the next rung, as a
    repeat of the alarm that started it (same budget, breaker and claim rules)."""
    from restarter.services.alarm_recovery import recover_from_alarm

    if record.node_action is None or record.status not in FAILED_RESTART_STATUSES:
        return None
    now = service.deps.clock.now()
    entry = next(
        (
            e
            for e in service.recoveries.history(record.cluster_id, now - timedelta(days=2))
            if e.restart_id == record.id
        ),
        None,
    )
    if entry is None:
        return None
    alarm = AlarmTransition(
        event_id=f"{record.id}{CONTINUE_SUFFIX}",
        alarm_name=entry.alarm_name,
        alarm_arn=None,
        state="ALARM",
        previous_state="OK",
        reason=f"recovery {record.id} ({record.node_action}) ended {record.status}",
        dimensions=({"ClusterId": record.cluster_id},),
    )
    outcome = recover_from_alarm(service, alarm)
    logger.info("node ladder continued", restart_id=record.id, action=outcome.action, rung=outcome.rung)
    return outcome
