"""The step loop of a restart: what the state machine's RestartStepFunction calls.

The state machine calls `advance(phase, attempt)` until the phase says it is done, waiting in
`Wait` states between calls; nothing here sleeps. Each call loads the record, checks the
restart's limits (deadline, cancel, a bound on polls), runs one step of the phase against the
real state of the instances, and saves what the step did. A call retried after a transient
error therefore picks up where the last one stopped. `cleanup` rolls a failed restart back,
`abandon` is the last resort when cleanup itself failed; both release the cluster's lock.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from restarter.domain import outcome
from restarter.domain.errors import PhaseFailedError, RestartCancelledError, RestarterError, RestartTimedOutError
from restarter.domain.models import Cluster, Phase, PhaseEntry, RestartRecord, format_time, parse_time
from restarter.domain.outcome import TaskFailure
from restarter.domain.planning import max_polls, next_phase, poll_delay, progress_at
from restarter.observability import logger, metrics
from restarter.services.restart.context import PhaseContext
from restarter.services.restart.phases import PHASES
from restarter.services.restart.rollback import CLEANUP_STATE_KEY, CleanupState, conclude_failure, roll_back
from restarter.services.restart.state import PhaseState, StateT, load_state, recorded_failure_details, store_state
from restarter.wiring import Dependencies

# Cleanup waits at most this long for instances to come back before it gives up and leaves
# the cluster in `error` (recorded, lock released) for a person or the alarm recovery.
CLEANUP_BUDGET = timedelta(minutes=15)
CLEANUP_MAX_POLLS = 40
DEFAULT_TIMEOUT_MINUTES = 15
MESSAGE_MAX_CHARS = 500


@dataclass(frozen=True)
class StepResult:
    """What the state machine reads after a step: `{done, attempt, wait_seconds, next}`."""

    done: bool
    attempt: int
    wait_seconds: int = 0
    next: str | None = None

    def to_output(self) -> dict[str, Any]:
        return {
            "done": self.done,
            "attempt": self.attempt,
            "wait_seconds": self.wait_seconds,
            "next": self.next,
        }


class RestartRunner:
    def __init__(self, deps: Dependencies) -> None:
        self.deps = deps

    # ================================================================ entry points
    def advance(self, restart_id: str, phase: Phase, attempt: int) -> StepResult:
        """One step of `phase`; done when the phase is, else the wait before the next poll."""
        record, version = self._load(restart_id)
        cluster = self._cluster(record)
        now = self.deps.clock.now()
        if attempt == 0:
            self._enter_phase(record, phase, now)
        step = PHASES.get(phase)
        ctx = self._context(record, cluster, phase, step.state_model if step else PhaseState, attempt)
        try:
            if phase != "ready":  # once health checks passed, the restart is done: no timeout, no cancel
                check_limits(record, phase, attempt, now)
            if step is None:
                raise PhaseFailedError(f"Phase {phase} has no step", {"phase": phase})
            done = step.run(ctx)
        except Exception as exc:
            # Keep what went wrong and what this step had already done: a retry resumes from there
            # (never repeating an action on an instance), and cleanup knows what to undo.
            ctx.state.failure = outcome.step_failure(exc)
            store_state(record, phase, ctx.state)
            try:
                self._save(record, version, cluster)
            except Exception as save_error:  # the step's own error is the one the state machine must see
                logger.error("could not save a failed step", restart_id=record.id, error_type=type(save_error).__name__)
            raise
        if done:
            self._finish_phase(record, phase, ctx.state.skipped, self.deps.clock.now())
            following = None if phase == "ready" else next_phase(record.plan, phase)
            # A phase may ask the state machine to let things settle before the next one starts.
            settle = ctx.state.settle_seconds or 0
            ctx.state.settle_seconds = None
            result = StepResult(done=True, attempt=0, wait_seconds=settle, next=following)
        else:
            wait = ctx.state.poll_seconds or poll_delay(phase, attempt)
            ctx.state.poll_seconds = None
            result = StepResult(done=False, attempt=attempt + 1, wait_seconds=wait)
        store_state(record, phase, ctx.state)
        self._save(record, version, cluster)
        if phase == "ready" and done:
            self._release(record)
        return result

    def cleanup(self, restart_id: str, error: Mapping[str, Any], attempt: int) -> StepResult:
        """Roll back what this restart changed, record the failure, release the lock."""
        record, version = self._load(restart_id)
        cluster = self._cluster(record)
        ctx = self._context(record, cluster, CLEANUP_STATE_KEY, CleanupState, attempt)
        state = ctx.state
        if attempt == 0:
            state.started_at = format_time(self.deps.clock.now())
            self._record_failure(record, task_failure_from_catch(error))
            logger.warning(
                "restart failed, cleaning up",
                restart_id=record.id,
                cluster_id=record.cluster_id,
                error_code=record.error.code if record.error else None,
                phase=record.error.phase if record.error else None,
            )
        started_at = parse_time(state.started_at) if state.started_at else self.deps.clock.now()
        out_of_time = self.deps.clock.now() - started_at > CLEANUP_BUDGET
        if attempt >= CLEANUP_MAX_POLLS or out_of_time:
            record.rollback_notes.append(outcome.GAVE_UP_NOTE)
            state.gave_up = True
            done = True
        else:
            done = roll_back(ctx)
        if not done:
            store_state(record, CLEANUP_STATE_KEY, state)
            self._save(record, version, cluster)
            return StepResult(done=False, attempt=attempt + 1, wait_seconds=poll_delay("rebooting", attempt))
        conclude_failure(ctx)
        store_state(record, CLEANUP_STATE_KEY, state)
        self._save(record, version, cluster)
        self._release(record)
        return StepResult(done=True, attempt=0)

    def abandon(self, restart_id: str, error: Mapping[str, Any]) -> StepResult:
        """Last resort when cleanup itself failed: record it and release the lock."""
        record, version = self._load(restart_id)
        cluster = self._cluster(record)
        failure = task_failure_from_catch(error)
        if record.error is None:
            self._record_failure(record, failure)
        record.rollback_notes.append(outcome.cleanup_failed_note(failure.name))
        record.status = outcome.status_after_abandon(record.status, record.error.code if record.error else None)
        record.restart_completed_at = record.restart_completed_at or format_time(self.deps.clock.now())
        cluster.status = "error"
        cluster.current_restart_id = None
        self._save(record, version, cluster)
        self._release(record)
        return StepResult(done=True, attempt=0)

    # ================================================================ the record
    def _context(
        self, record: RestartRecord, cluster: Cluster, key: str, model: type[StateT], attempt: int
    ) -> PhaseContext[StateT]:
        return PhaseContext(
            record=record,
            cluster=cluster,
            provider=self.deps.provider,
            clock=self.deps.clock,
            state=load_state(record, key, model),
            attempt=attempt,
            health=self.deps.health,
        )

    def _record_failure(self, record: RestartRecord, failure: TaskFailure) -> None:
        """Record the error now; the terminal status is set once cleanup has concluded."""
        phase = record.progress.phase
        record.error = outcome.restart_error(failure, phase, recorded_failure_details(record, phase))
        record.progress = record.progress.model_copy(
            update={"current_step": outcome.rolling_back_step(failure.message)}
        )
        for entry in record.phase_history:
            if entry.outcome == "in_progress":
                entry.outcome = "failed"
                entry.ended_at = format_time(self.deps.clock.now())
                entry.detail = failure.message

    def _enter_phase(self, record: RestartRecord, phase: Phase, now: datetime) -> None:
        last = record.phase_history[-1] if record.phase_history else None
        if last is not None and last.phase == phase and last.outcome == "in_progress":
            return  # the state machine retried the phase's first step: entered and announced already
        record.progress = progress_at(record.plan, phase)
        record.phase_history.append(PhaseEntry(phase=phase, started_at=format_time(now)))
        logger.info("restart phase started", restart_id=record.id, cluster_id=record.cluster_id, phase=phase)
        self.deps.events.publish(
            "Restart Phase Changed",
            {
                "restart_id": record.id,
                "cluster_id": record.cluster_id,
                "phase": phase,
                "progress": record.progress.model_dump(),
            },
            resources=[record.cluster_id],
        )

    @staticmethod
    def _finish_phase(record: RestartRecord, phase: Phase, skipped: str | None, now: datetime) -> None:
        for entry in reversed(record.phase_history):
            if entry.phase == phase and entry.outcome == "in_progress":
                entry.ended_at = format_time(now)
                entry.outcome = "skipped" if skipped else "succeeded"
                entry.detail = skipped
                break

    def _release(self, record: RestartRecord) -> None:
        """Release the cluster's lock, then tell the audit trail and the event bus how it ended."""
        released = self.deps.locks.release(record.cluster_id, record.id)
        self._forget_pending_environment(record)
        status = record.status
        metrics.add_metric(name=f"Restarts_{status}", unit=MetricUnit.Count, value=1)
        if record.downtime_seconds is not None:
            metrics.add_metric(name="DowntimeSeconds", unit=MetricUnit.Seconds, value=record.downtime_seconds)
        logger.info(
            "restart finished",
            restart_id=record.id,
            cluster_id=record.cluster_id,
            status=status,
            lock_released=released,
            downtime_seconds=record.downtime_seconds,
        )
        error = record.error.model_dump() if record.error else None
        self.deps.audit.record(
            record.cluster_id,
            "restart.finished",
            record.requested_by,
            status,
            self.deps.clock.now(),
            restart_id=record.id,
            applied=record.configuration_updates.applied,
            error=error,
            rollback_notes=record.rollback_notes,
        )
        self.deps.events.publish(
            "Restart Completed",
            {
                "restart_id": record.id,
                "cluster_id": record.cluster_id,
                "status": status,
                "downtime_seconds": record.downtime_seconds,
                "restart_duration_seconds": record.restart_duration_seconds,
                "error": error,
            },
            resources=[record.cluster_id],
        )

    def _forget_pending_environment(self, record: RestartRecord) -> None:
        """The request's environment values were merged into the cluster's parameter (or rolled
        back): the per-restart copy of the secrets has no further use."""
        if not record.target.environment_parameter:
            return
        try:
            self.deps.provider.delete_environment(record.target.environment_parameter)
        except RestarterError as exc:
            logger.warning("pending environment not deleted", restart_id=record.id, error_code=exc.code)

    def _load(self, restart_id: str) -> tuple[RestartRecord, int]:
        loaded = self.deps.restarts.get(restart_id)
        if loaded is None:
            raise PhaseFailedError("Restart record not found", {"restart_id": restart_id})
        # every line this step logs names the restart's cluster and tenant (the handler adds the
        # restart id and the phase)
        logger.append_keys(cluster_id=loaded[0].cluster_id, tenant=loaded[0].tenant_id)
        return loaded

    def _cluster(self, record: RestartRecord) -> Cluster:
        cluster = self.deps.clusters.get(record.cluster_id)
        if cluster is None:
            raise PhaseFailedError("Cluster record not found", {"cluster_id": record.cluster_id})
        return cluster

    def _save(self, record: RestartRecord, version: int, cluster: Cluster) -> None:
        cluster.updated_at = format_time(self.deps.clock.now())
        self.deps.restarts.put(record, version)
        self.deps.clusters.put(cluster)


def check_limits(record: RestartRecord, phase: Phase, attempt: int, now: datetime) -> None:
    """The deadline, a cancellation, and a bound on polls even if the clock misbehaves."""
    timeout_minutes = record.request.get("timeout_minutes", DEFAULT_TIMEOUT_MINUTES)
    if now > parse_time(record.deadline):
        raise RestartTimedOutError(
            f"Restart exceeded its timeout of {timeout_minutes} minutes",
            {"phase": phase, "deadline": record.deadline},
        )
    if record.cancel_requested_at:
        raise RestartCancelledError(
            f"Restart cancelled by {record.cancel_requested_by or 'a user'}",
            {"phase": phase, "cancel_requested_at": record.cancel_requested_at},
        )
    if attempt >= max_polls(int(timeout_minutes)):
        raise PhaseFailedError(f"Phase {phase} did not finish", {"phase": phase, "polls": attempt})


def task_failure_from_catch(error: Mapping[str, Any]) -> TaskFailure:
    """The name and message of a failure as a Step Functions Catch hands it over (`Error`,
    `Cause`); a Lambda puts its message, as JSON, in the Cause."""
    name = str(error.get("Error") or error.get("error") or "UnknownError")
    cause = error.get("Cause") or error.get("cause") or ""
    try:
        parsed = json.loads(cause)
    except (TypeError, ValueError):
        return TaskFailure(name, str(cause)[:MESSAGE_MAX_CHARS] or name)
    if isinstance(parsed, dict):
        return TaskFailure(name, str(parsed.get("errorMessage") or name)[:MESSAGE_MAX_CHARS])
    return TaskFailure(name, str(parsed)[:MESSAGE_MAX_CHARS])
