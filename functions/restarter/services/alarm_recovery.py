"""Recovering a cluster when one of its alarms goes into ALARM.

map the alarm to a cluster → claim the event (once per event id) → read the cluster's recent
recoveries → decide (budget, escalation, strategy: `domain.recovery`) → `accept_restart` with
the seed's request body for the strategy → record the recovery → mark the event done. Every
event is audited, whether it acted or not; only failures a retry may fix raise (and release the
claim first).

The claim is held `in_progress` for a lease (`CLAIM_LEASE`, twice the function's timeout): if
the invocation dies holding it, a delivery after the lease proceeds (and finds the recovery if
the dead one had got as far as recording it); a delivery while it is held raises, so that Lambda
retries it later; once `done`, every delivery is a duplicate.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from restarter.adapters.recovery_store import IN_PROGRESS
from restarter.domain.errors import ConflictError, InvalidStateError, NotFoundError, RequestValidationError
from restarter.domain.models import Cluster, format_time
from restarter.domain.node_recovery import node_action_of, rung_request
from restarter.domain.recovery import (
    BUDGET_WINDOW,
    INSTANCE_DIMENSION,
    AlarmMapping,
    AlarmTransition,
    RecoveryDecision,
    RecoveryEntry,
    RecoveryOutcome,
    Strategy,
    decide_recovery,
    latest,
    map_by_dimensions,
    map_by_tags,
    policy_from_labels,
    recovery_request,
)
from restarter.observability import logger
from restarter.services.node_recovery import breaker_admits, choose_node_rung, needs_replacement
from restarter.services.restart_intake import accept_restart
from restarter.wiring import AlarmRecoveryDependencies, Dependencies

AUDIT_ACTION = "alarm.state_changed"
# AlarmRecoveryFunction's Timeout in template.yaml; the claim's lease is twice that, so an
# invocation still running always holds it, and Lambda's first async retry (about a minute after
# a failed or timed-out invocation) finds it expired.
FUNCTION_TIMEOUT_SECONDS = 30
CLAIM_LEASE = timedelta(seconds=2 * FUNCTION_TIMEOUT_SECONDS)
BUDGET_EXHAUSTED_EVENT = "Recovery Budget Exhausted"
# What accept_restart refuses for a reason of the cluster's or the request's; answered, not raised.
REFUSALS = (InvalidStateError, RequestValidationError, NotFoundError, ConflictError)


def requested_by(alarm: AlarmTransition) -> str:
    return f"alarm:{alarm.alarm_name}"[:200]


# ---------------------------------------------------------------- mapping


def map_alarm(service: AlarmRecoveryDependencies, alarm: AlarmTransition) -> tuple[AlarmMapping, Cluster | None]:
    """The alarm's cluster: by `ClusterId`, else `InstanceId` over the cluster records, else the
    alarm's `restarter:cluster` tag. Returns the mapping and the cluster (None if unknown)."""
    deps = service.deps
    mapping = map_by_dimensions(alarm.dimensions)
    if mapping.cluster_id is None and not mapping.candidates and _has_instance_dimension(alarm):
        mapping = map_by_dimensions(alarm.dimensions, deps.clusters.list_all())
    if mapping.cluster_id is None and not mapping.candidates:
        mapping = map_by_tags(service.alarms.tags(alarm.alarm_arn), deps.settings.cluster_tag_key)
    cluster = deps.clusters.get(mapping.cluster_id) if mapping.cluster_id else None
    return mapping, cluster


def _has_instance_dimension(alarm: AlarmTransition) -> bool:
    return any(INSTANCE_DIMENSION in d for d in alarm.dimensions)


# ---------------------------------------------------------------- the use case


def recover_from_alarm(service: AlarmRecoveryDependencies, alarm: AlarmTransition) -> RecoveryOutcome:
    deps = service.deps
    mapping, cluster = map_alarm(service, alarm)
    entity = cluster.id if cluster else f"alarm:{alarm.alarm_arn or alarm.alarm_name}"
    logger.append_keys(alarm_name=alarm.alarm_name, event_id=alarm.event_id, cluster_id=mapping.cluster_id)

    if not alarm.enters_alarm:
        outcome = RecoveryOutcome(
            "ignored",
            alarm.alarm_name,
            alarm.event_id,
            cluster_id=cluster.id if cluster else None,
            reasons=[f"transition {alarm.previous_state} -> {alarm.state} is not into ALARM"],
        )
        logger.info("alarm transition ignored", state=alarm.state, previous_state=alarm.previous_state)
        _audit(deps, entity, alarm, outcome, via=mapping.via)
        return outcome

    if cluster is None:
        reason = (
            f"alarm points at several clusters: {', '.join(mapping.candidates)}"
            if mapping.ambiguous
            else f"no cluster {mapping.cluster_id}"
            if mapping.cluster_id
            else "no ClusterId/InstanceId dimension or restarter:cluster tag maps this alarm to a cluster"
        )
        outcome = RecoveryOutcome("unmapped", alarm.alarm_name, alarm.event_id, reasons=[reason])
        logger.warning("alarm maps to no cluster", reason=reason)
        _audit(deps, entity, alarm, outcome, via=mapping.via)
        return outcome

    now = deps.clock.now()
    standing = service.recoveries.claim_event(
        alarm.event_id, now, CLAIM_LEASE, cluster_id=cluster.id, alarm_name=alarm.alarm_name
    )
    if standing == IN_PROGRESS:
        # another invocation is on it; if it dies, a retry after its lease takes over
        logger.info("alarm event being handled by another invocation")
        raise ConflictError(
            "The alarm event is being handled by another invocation; retry after its lease",
            {"event_id": alarm.event_id, "lease_seconds": int(CLAIM_LEASE.total_seconds())},
        )
    if standing is not None:
        logger.info("alarm event already handled")
        return _duplicate(alarm, cluster)
    try:
        outcome = _recover(service, alarm, cluster, now)
    except Exception:
        # not handled: let a redelivery (Lambda's async retries) try again
        service.recoveries.release_event(alarm.event_id)
        raise
    if outcome.action != "duplicate":
        _audit(deps, cluster.id, alarm, outcome, via=mapping.via)
    service.recoveries.finish_event(alarm.event_id, deps.clock.now())
    return outcome


def _duplicate(alarm: AlarmTransition, cluster: Cluster) -> RecoveryOutcome:
    return RecoveryOutcome(
        "duplicate", alarm.alarm_name, alarm.event_id, cluster_id=cluster.id, reasons=["event already handled"]
    )


def _recover(
    service: AlarmRecoveryDependencies, alarm: AlarmTransition, cluster: Cluster, now: datetime
) -> RecoveryOutcome:
    deps = service.deps
    policy = policy_from_labels(cluster.labels)
    if policy.problems:
        logger.warning("recovery labels not understood, defaults used", cluster_id=cluster.id, problems=policy.problems)
    lookback = max(BUDGET_WINDOW, policy.cooldown)
    history = service.recoveries.history(cluster.id, now - lookback)
    if any(entry.event_id == alarm.event_id for entry in history):
        # an invocation that died after starting this event's recovery, before marking it done
        logger.info("alarm event's recovery already started", cluster_id=cluster.id)
        return _duplicate(alarm, cluster)
    previous = latest(history)
    previous_status = None
    if previous is not None:
        stored = deps.restarts.get(previous.restart_id)
        previous_status = stored[0].status if stored else None
    # the GPUs' health (or the previous rung) puts the recovery on the node ladder; its top,
    # replacing the node, restarts nothing, so no budget holds it back
    rung = choose_node_rung(service, cluster, previous, previous_status, now, policy.cooldown)
    if rung is not None and rung.rung == "replace":
        return needs_replacement(service, alarm, cluster, rung)
    decision = decide_recovery(
        policy, history, now, previous_restart_status=previous_status, snapshots=cluster.snapshots
    )
    if decision.action == "budget_exhausted":
        return _budget_exhausted(service, alarm, cluster, decision)

    paused = breaker_admits(service, alarm, cluster, now)
    if paused is not None:
        return paused
    assert decision.strategy is not None
    strategy: Strategy = decision.strategy
    escalated_from, reasons = decision.escalated_from, list(decision.reasons)
    node_action = node_action_of(rung.rung) if rung is not None else None
    if node_action is not None and rung is not None:
        strategy, escalated_from, reasons = "restart", None, list(rung.reasons)
        body = rung_request(node_action, alarm.alarm_name, rung.reasons)
    else:
        body = recovery_request(strategy, cluster, now, alarm.alarm_name)
    try:
        record = accept_restart(
            deps, cluster.id, body, trigger="alarm", requested_by=requested_by(alarm), node_action=node_action
        )
    except REFUSALS as exc:
        # INVALID_STATE (a restart in flight, a cluster that is starting) and the other refusals:
        # accept_restart audited it; the alarm is answered and the claim kept (a redelivery would
        # be refused the same way). Provider and internal errors raise instead.
        logger.info("alarm recovery refused", cluster_id=cluster.id, error_code=exc.code, strategy=strategy)
        return RecoveryOutcome(
            "refused",
            alarm.alarm_name,
            alarm.event_id,
            cluster_id=cluster.id,
            strategy=strategy,
            escalated_from=escalated_from,
            reasons=[*reasons, exc.message],
            error_code=exc.code,
            rung=node_action,
        )
    service.recoveries.record(
        RecoveryEntry(
            cluster_id=cluster.id,
            recovered_at=format_time(now),
            alarm_name=alarm.alarm_name,
            strategy=strategy,
            restart_id=record.id,
            event_id=alarm.event_id,
            escalated_from=escalated_from,
            reasons=reasons,
            rung=node_action,
        )
    )
    logger.info(
        "alarm recovery started",
        cluster_id=cluster.id,
        restart_id=record.id,
        strategy=strategy,
        rung=node_action,
        escalated_from=escalated_from,
        reasons=reasons,
    )
    return RecoveryOutcome(
        "recovery_started",
        alarm.alarm_name,
        alarm.event_id,
        cluster_id=cluster.id,
        strategy=strategy,
        escalated_from=escalated_from,
        restart_id=record.id,
        reasons=reasons,
        rung=node_action,
    )


def _budget_exhausted(
    service: AlarmRecoveryDependencies, alarm: AlarmTransition, cluster: Cluster, decision: RecoveryDecision
) -> RecoveryOutcome:
    logger.warning(
        "alarm recovery budget exhausted",
        cluster_id=cluster.id,
        recoveries=decision.recoveries_in_window,
        budget=decision.budget,
    )
    service.deps.events.publish(
        BUDGET_EXHAUSTED_EVENT,
        {
            "cluster_id": cluster.id,
            "cluster_name": cluster.name,
            "alarm_name": alarm.alarm_name,
            "alarm_arn": alarm.alarm_arn,
            "event_id": alarm.event_id,
            "recoveries_in_window": decision.recoveries_in_window,
            "window_hours": int(BUDGET_WINDOW.total_seconds() // 3600),
            "budget": decision.budget,
            "budget_resets_at": decision.budget_resets_at,
        },
        [alarm.alarm_arn] if alarm.alarm_arn else [],
    )
    return RecoveryOutcome(
        "budget_exhausted", alarm.alarm_name, alarm.event_id, cluster_id=cluster.id, reasons=list(decision.reasons)
    )


def _audit(deps: Dependencies, entity: str, alarm: AlarmTransition, outcome: RecoveryOutcome, *, via: str) -> None:
    deps.audit.record(
        entity,
        AUDIT_ACTION,
        requested_by(alarm),
        outcome.action,
        deps.clock.now(),
        trigger="alarm",
        alarm_name=alarm.alarm_name,
        alarm_arn=alarm.alarm_arn,
        event_id=alarm.event_id,
        state=alarm.state,
        previous_state=alarm.previous_state,
        mapped_by=via,
        strategy=outcome.strategy,
        rung=outcome.rung,
        escalated_from=outcome.escalated_from,
        restart_id=outcome.restart_id,
        error_code=outcome.error_code,
        reasons=outcome.reasons,
    )
