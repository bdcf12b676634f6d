"""Rollouts: start one, and the steps the rollout state machine runs for each item.

A rollout is one execution of `statemachine/rollout.asl.json`: a Map over the clusters that
have not succeeded yet. Each item claims its place through the rollout record (the shared
counter: a new item starts only while the failures recorded so far are under the threshold
and the maintenance window is open), starts an ordinary restart through the intake, polls the
restart record until it is terminal, and records its result. An item never fails the Map:
any error becomes a failed result. Starting a rollout again with the same id resumes it:
clusters that already succeeded are not restarted again and keep their result.

The rollout execution's history holds every item's steps (an inline Map), so an item polls
sparingly: first when its restart is expected to be done, then with a backoff
(`domain.rollouts.first_wait_seconds`, `next_poll_seconds`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any

from restarter.domain.errors import (
    ConflictError,
    NotFoundError,
    RestarterError,
    TransientProviderError,
)
from restarter.domain.models import RestartRecord, format_time, parse_time
from restarter.domain.rollouts import (
    POLL_BASE_SECONDS,
    ItemResult,
    MaintenanceWindow,
    ResumeMark,
    RolloutRecord,
    RolloutSpec,
    RolloutTrigger,
    check_resume_window,
    check_rollout_size,
    check_window_start,
    first_wait_seconds,
    may_start,
    next_poll_seconds,
    request_for,
    reset_for_resume,
    resolve_window,
    select_targets,
    summarize,
    window_closed,
    window_fingerprint,
    window_start_delay,
)
from restarter.observability import logger
from restarter.services.restart_intake import LOCK_MARGIN, accept_restart
from restarter.wiring import RolloutDependencies


def new_rollout_id() -> str:
    return f"rol_{secrets.token_hex(8)}"


# ---------------------------------------------------------------- starting (and resuming)


def create_rollout(
    rd: RolloutDependencies,
    spec: RolloutSpec,
    *,
    requested_by: str,
    tenant_id: str | None = None,
    trigger: RolloutTrigger = "api",
    rollout_id: str | None = None,
) -> tuple[RolloutRecord, bool]:
    """Resolve the targets (the tenant's clusters only) and start a rollout over them.

    A caller that derives `rollout_id` from its delivery (a schedule's firing, a queue
    message) gets the existing rollout back, and `False`, when the delivery comes again. If
    that rollout's execution was never started (StartExecution failed after the record was
    saved), the same delivery starts it now and gets `True`: True means "started by this call".
    """
    deps = rd.deps
    rollout_id = rollout_id or new_rollout_id()
    existing = rd.store.get(rollout_id)
    if existing is not None:
        return _start_if_never_started(rd, existing[0], spec)
    now = deps.clock.now()
    check_window_start(spec.maintenance_window, now)
    visible = [c for c in deps.clusters.list_all() if tenant_id is None or c.tenant_id == tenant_id]
    targets = select_targets(spec, visible)
    check_rollout_size(len(targets), _selector_field(spec))
    for cluster in targets:
        request_for(spec, cluster)  # a body that cannot be valid fails the start, not every item
    window = resolve_window(spec.maintenance_window, now)
    record = RolloutRecord(
        rollout_id=rollout_id,
        spec=spec,
        requested_by=requested_by,
        tenant_id=tenant_id,
        trigger=trigger,
        created_at=format_time(deps.clock.now()),
        results=[ItemResult(cluster_id=c.id, name=c.name) for c in targets],
        window=window if window != spec.maintenance_window else None,
    )
    try:
        rd.store.put(record, None)
    except ConflictError:  # the same delivery, handled at the same moment elsewhere (it starts it)
        stored = rd.store.get(rollout_id)
        if stored is None:
            raise
        return stored[0], False
    deps.audit.record(
        f"rollout:{rollout_id}",
        "rollout.started",
        requested_by,
        "accepted",
        deps.clock.now(),
        trigger=trigger,
        maintenance_window=spec.maintenance_window.id,
        clusters=[c.id for c in targets],
    )
    return _run(rd, record), True


def _selector_field(spec: RolloutSpec) -> str:
    return next(name for name in ("cluster_ids", "labels", "name_pattern") if getattr(spec, name) is not None)


def _start_if_never_started(
    rd: RolloutDependencies, record: RolloutRecord, spec: RolloutSpec
) -> tuple[RolloutRecord, bool]:
    """A delivery that comes again finds its rollout. If the rollout's current execution was never
    recorded as started (the first delivery failed between saving the record and StartExecution,
    or before recording the execution), this delivery starts it: the execution's name is one per
    attempt, so a start that did happen is found, not doubled. Another request under the same id
    (a reused Idempotency-Key with a different spec) starts nothing; the caller refuses it."""
    if record.status != "running" or record.start_recorded or record.spec != spec:
        return record, False
    logger.warning("rollout found without a started execution; starting it", rollout_id=record.rollout_id)
    return _run(rd, record), True


def resume_rollout(
    rd: RolloutDependencies,
    rollout_id: str,
    *,
    tenant_id: str | None = None,
    window: MaintenanceWindow | None = None,
    idempotency_key: str | None = None,
    requested_by: str = "operator",
) -> tuple[RolloutRecord, bool]:
    """Run again every cluster that has not succeeded; succeeded ones keep their result, the
    others keep their earlier error until they are tried again.

    `window` (a later maintenance window) replaces the rollout's window for this run and is
    recorded on it; without one the current window stays (one that has closed skips the rest
    again). With `idempotency_key`, a retry of the same resume answers it (`False`) instead of
    resuming again, and the same key with another window is a CONFLICT. Returns the rollout and
    whether this call resumed it."""
    stored = rd.store.get(rollout_id)
    if stored is None or (tenant_id is not None and stored[0].tenant_id != tenant_id):
        raise NotFoundError("Rollout not found", {"rollout_id": rollout_id})
    record, version = stored
    fingerprint = window_fingerprint(window)
    mark = record.last_resume
    if idempotency_key is not None and mark is not None and mark.key == idempotency_key:
        if mark.fingerprint != fingerprint:
            raise ConflictError(
                "This Idempotency-Key was used with a different request",
                {"header": "Idempotency-Key", "rollout_id": rollout_id},
            )
        if mark.attempt == record.attempt and record.status == "running" and not record.start_recorded:
            return _run(rd, record), True  # that resume saved its attempt but never started it
        return record, False
    if record.status == "running" and _still_running(rd, record.execution_arn):
        raise ConflictError("The rollout is still running", {"rollout_id": rollout_id})
    now = rd.deps.clock.now()
    if window is not None:
        check_resume_window(window, now)
        record.window = resolve_window(window, now)
    earlier_failures = {r.cluster_id: r.error for r in record.results if r.status != "succeeded"}
    record.results = reset_for_resume(record.results)
    record.attempt += 1
    record.status = "running"
    record.completed_at = None
    if idempotency_key is not None:
        record.last_resume = ResumeMark(key=idempotency_key, fingerprint=fingerprint, attempt=record.attempt)
    rd.store.put(record, version)
    rd.deps.audit.record(
        f"rollout:{rollout_id}",
        "rollout.resumed",
        requested_by,
        "accepted",
        now,
        attempt=record.attempt,
        maintenance_window=record.current_window.model_dump(mode="json", exclude_none=True),
        earlier_failures=earlier_failures,
    )
    return _run(rd, record), True


def get_rollout(rd: RolloutDependencies, rollout_id: str, *, tenant_id: str | None = None) -> RolloutRecord:
    """Another tenant's rollout is the same 404 as a missing one."""
    stored = rd.store.get(rollout_id)
    if stored is None or (tenant_id is not None and stored[0].tenant_id != tenant_id):
        raise NotFoundError("Rollout not found", {"rollout_id": rollout_id})
    return stored[0]


def _run(rd: RolloutDependencies, record: RolloutRecord) -> RolloutRecord:
    """One execution over the items that have not succeeded yet (named by the attempt, so a
    second start of the same attempt finds the first: ExecutionAlreadyExists, or Step Functions
    answering the running execution for the same name and input). Its first state waits for the
    window to open."""
    rollout_id = record.rollout_id
    items = [r.cluster_id for r in record.results if r.status != "succeeded"]
    if not items:
        return rd.store.update(rollout_id, _complete(format_time(rd.deps.clock.now())))
    if rd.executions is None:
        raise RestarterError("No rollout state machine is configured", {"setting": "ROLLOUT_STATE_MACHINE_ARN"})
    name = record.execution_name
    payload = {
        "rollout_id": rollout_id,
        "items": items,
        "max_concurrency": record.spec.max_concurrency,
        "wait_seconds": window_start_delay(record.current_window, rd.deps.clock.now()),
    }
    execution_arn = rd.executions.start_once(name, payload)  # a first try may have started it

    def _started(current: RolloutRecord) -> None:
        if current.attempt == record.attempt:
            current.execution_arn = execution_arn

    logger.info("rollout started", rollout_id=rollout_id, attempt=record.attempt, items=len(items))
    return rd.store.update(rollout_id, _started)


def _still_running(rd: RolloutDependencies, execution_arn: str | None) -> bool:
    """Without a rollout state machine nothing runs (and `_run` says it is not configured)."""
    if not execution_arn or rd.executions is None:
        return False
    return rd.executions.is_running(execution_arn)


def _complete(at: str) -> Callable[[RolloutRecord], None]:
    def change(record: RolloutRecord) -> None:
        record.status = "completed"
        record.completed_at = at

    return change


# ---------------------------------------------------------------- the state machine's steps


def _output(item: ItemResult, wait_seconds: int = 0) -> dict[str, Any]:
    return {
        "status": item.status,
        "restart_id": item.restart_id,
        "wait_seconds": wait_seconds,
        "result": item.model_dump(mode="json"),
    }


def start_item(rd: RolloutDependencies, rollout_id: str, cluster_id: str) -> dict[str, Any]:
    """Claim the item and start its restart, or skip it (threshold reached, window closed)."""
    deps = rd.deps
    current = get_rollout(rd, rollout_id).result(cluster_id)
    if current.finished:
        return _output(current)  # already decided (a resumed rollout passes no succeeded item)
    if current.status == "running" and current.restart_id:
        return _output(current, POLL_BASE_SECONDS)  # a retried call: keep following the restart

    now = deps.clock.now()
    stamp = format_time(now)

    def claim(record: RolloutRecord) -> None:
        item = record.result(cluster_id)
        if item.status == "running":
            return  # claimed by an earlier try of this call
        if window_closed(record.current_window, now):
            item.status, item.error = "skipped_window_closed", "The maintenance window closed before it started"
        elif not may_start(record.results, record.spec):
            item.status, item.error = "skipped", "The rollout's failure threshold was reached"
        else:
            item.status, item.error = "running", None
            item.started_at = stamp
            return
        item.success = False
        item.finished_at = stamp

    record = rd.store.update(rollout_id, claim)
    item = record.result(cluster_id)
    if item.status != "running":
        logger.info("rollout item skipped", rollout_id=rollout_id, cluster_id=cluster_id, status=item.status)
        return _output(item)

    earlier = _started_by_an_earlier_try(rd, rollout_id, item)
    if earlier is not None:
        # An earlier try started the restart, then failed to record it (a lost race on the
        # rollout record, a timeout): follow that restart, never start a second one.
        restart = earlier
    else:
        restart_or_output = _start_restart(rd, record, rollout_id, cluster_id)
        if isinstance(restart_or_output, dict):
            return restart_or_output
        restart = restart_or_output

    def started(current_record: RolloutRecord) -> None:
        current_record.result(cluster_id).restart_id = restart.id

    item = rd.store.update(rollout_id, started).result(cluster_id)
    return _output(item, _first_wait(restart, now))


def _started_by_an_earlier_try(rd: RolloutDependencies, rollout_id: str, item: ItemResult) -> RestartRecord | None:
    """The restart this item's claim already started, if any: the cluster's newest restart,
    asked for by this rollout since the claim."""
    newest, _ = rd.deps.restarts.list_for_cluster(item.cluster_id, limit=1)
    if not newest or not item.started_at:
        return None
    restart = newest[0]
    if restart.requested_by == f"rollout:{rollout_id}" and restart.restart_initiated_at >= item.started_at:
        return restart
    return None


def _start_restart(
    rd: RolloutDependencies, record: RolloutRecord, rollout_id: str, cluster_id: str
) -> RestartRecord | dict[str, Any]:
    """The item's restart, or the item's failed output when it could not start."""
    deps = rd.deps
    try:
        cluster = deps.clusters.get(cluster_id)
        if cluster is None:
            raise NotFoundError("Cluster not found", {"cluster_id": cluster_id})
        restart = accept_restart(
            deps,
            cluster_id,
            request_for(record.spec, cluster),
            trigger=record.trigger,
            requested_by=f"rollout:{rollout_id}",
            tenant_id=record.tenant_id,
        )
    except TransientProviderError:
        raise  # the state machine retries this step; the claim stays ours
    except RestarterError as exc:
        return _output(_record_failure(rd, rollout_id, cluster_id, exc.message))
    return restart


def _first_wait(restart: RestartRecord, now: datetime) -> int:
    """The first poll comes about when the restart is expected to be done."""
    return first_wait_seconds(parse_time(restart.estimated_completion_time), now)


def poll_item(
    rd: RolloutDependencies, rollout_id: str, cluster_id: str, restart_id: str, polls: int = 0
) -> dict[str, Any]:
    """Is the item's restart over? If not, how long to wait before poll number `polls + 2`
    (a backoff, so that a slow restart costs the rollout's history few events)."""
    deps = rd.deps
    stored = deps.restarts.get(restart_id)
    now = deps.clock.now()
    if stored is None:
        return {"done": True, "wait_seconds": 0, "polls": polls + 1, "restart_id": restart_id, "cluster_id": cluster_id}
    deadline = parse_time(stored[0].deadline)
    give_up_at = deadline + LOCK_MARGIN
    done = stored[0].is_terminal or now > give_up_at
    wait = 0 if done else next_poll_seconds(polls, now, deadline, give_up_at)
    return {"done": done, "wait_seconds": wait, "polls": polls + 1, "restart_id": restart_id, "cluster_id": cluster_id}


def finish_item(rd: RolloutDependencies, rollout_id: str, cluster_id: str, restart_id: str) -> dict[str, Any]:
    """Record the item's result from its restart record (this updates the shared counter)."""
    deps = rd.deps
    stored = deps.restarts.get(restart_id)
    stamp = format_time(deps.clock.now())

    def finished(record: RolloutRecord) -> None:
        item = record.result(cluster_id)
        item.restart_id = restart_id
        item.finished_at = stamp
        if stored is None:
            item.status, item.success, item.error = "failed", False, "The restart record is missing"
            return
        restart = stored[0]
        item.success = restart.status == "ready"
        item.status = "succeeded" if item.success else "failed"
        item.downtime_seconds = restart.downtime_seconds
        item.updates_applied = list(restart.configuration_updates.applied)
        if item.success:
            item.error = None
        elif restart.error is not None:
            item.error = restart.error.message
        elif restart.is_terminal:
            item.error = f"The restart ended {restart.status}"
        else:
            item.error = "The restart did not finish in time"

    item = rd.store.update(rollout_id, finished).result(cluster_id)
    logger.info("rollout item finished", rollout_id=rollout_id, cluster_id=cluster_id, status=item.status)
    return _output(item)


def fail_item(rd: RolloutDependencies, rollout_id: str, cluster_id: str, message: str) -> dict[str, Any]:
    """A step of this item failed for good (the state machine caught it): a failed result."""
    return _output(_record_failure(rd, rollout_id, cluster_id, message))


def _record_failure(rd: RolloutDependencies, rollout_id: str, cluster_id: str, message: str) -> ItemResult:
    stamp = format_time(rd.deps.clock.now())

    def failed(record: RolloutRecord) -> None:
        item = record.result(cluster_id)
        if item.status == "succeeded":
            return
        item.status, item.success, item.error, item.finished_at = "failed", False, message, stamp

    logger.warning("rollout item failed", rollout_id=rollout_id, cluster_id=cluster_id, error=message)
    return rd.store.update(rollout_id, failed).result(cluster_id)


def finish(rd: RolloutDependencies, rollout_id: str) -> dict[str, Any]:
    """The rollout's report; items that never got a result (an aborted run) are failed."""
    stamp = format_time(rd.deps.clock.now())

    def completed(record: RolloutRecord) -> None:
        for item in record.results:
            if not item.finished:
                item.status, item.success = "failed", False
                item.error = item.error or "The item did not report a result"
                item.finished_at = stamp
        _complete(stamp)(record)

    record = rd.store.update(rollout_id, completed)
    summary = summarize(record)
    logger.info(
        "rollout finished",
        rollout_id=rollout_id,
        successful=summary["successful_updates"],
        failed=summary["failed"],
        skipped=summary["skipped"],
    )
    return summary
