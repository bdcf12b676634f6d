"""How a restart that did not reach `ready` ends: pure decisions, no I/O.

The runner acts (rolls back, saves, releases the lock); what the failure is called, which
status the restart and the cluster end in, and which notes explain what stayed changed are
decided here, so that they can be read (and tested) as one table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from restarter.domain.errors import RestarterError
from restarter.domain.inventory import CommandInvocation
from restarter.domain.models import AppliedChanges, ClusterStatus, RestartError, RestartStatus

# The error names a task failure carries (Step Functions' `Error`) that are not a plain failure.
# `States.Timeout` is one step running past its task timeout: a failure, not the restart's own
# `timeout_minutes`. The `Execution*` names come from an execution that ended outside the state
# machine's Catch (see services/ended_executions.py).
ERROR_CODES: Mapping[str, str] = {
    "RestartTimedOutError": "TIMED_OUT",
    "ExecutionTimedOut": "TIMED_OUT",
    "RestartCancelledError": "CANCELLED",
    "ExecutionAborted": "CANCELLED",
}
DEFAULT_ERROR_CODE = "RESTART_FAILED"

GAVE_UP_NOTE = "cleanup gave up waiting for the instances; cluster needs attention"
STORAGE_NOTE = "storage growth cannot be undone (EBS volumes only grow)"
SYSTEM_UPDATES_NOTE = "installed system updates were kept"
ROOT_VOLUMES_NOTE = "root volumes stay restored; the replaced volumes were kept"
STDERR_TAIL_CHARS = 300


@dataclass(frozen=True)
class TaskFailure:
    """A failed step as the state machine reports it: the error's name and its message."""

    name: str
    message: str


@dataclass(frozen=True)
class StepFailure:
    """What a failed step had hit, kept in the phase's state for the cleanup's error details."""

    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


def error_code(error_name: str) -> str:
    """The record's error code for a task failure's error name."""
    return ERROR_CODES.get(error_name, DEFAULT_ERROR_CODE)


def failure_status(code: str | None, *, rolled_back: bool) -> RestartStatus:
    """The terminal status of a restart that did not reach `ready`."""
    if code == "TIMED_OUT":
        return "timed_out"
    if code == "CANCELLED":
        return "cancelled"
    return "rolled_back" if rolled_back else "failed"


def step_failure(exc: BaseException) -> StepFailure:
    """A product error keeps its code and details; anything else is INTERNAL, named by its type only."""
    if isinstance(exc, RestarterError):
        return StepFailure(code=exc.code, message=exc.message, details=dict(exc.details))
    return StepFailure(code="INTERNAL", message=type(exc).__name__)


def restart_error(failure: TaskFailure, phase: str, step_details: Mapping[str, Any]) -> RestartError:
    """The error recorded on the restart: the task failure plus what the failed step had seen."""
    return RestartError(
        code=error_code(failure.name),
        message=failure.message,
        phase=phase,
        details={"error_type": failure.name, **step_details},
    )


def rolling_back_step(message: str) -> str:
    """The progress line while cleanup runs."""
    return f"Rolling back after: {message}"


def reverts_something(changes: AppliedChanges) -> bool:
    """Whether cleanup has a change to put back (instance type, container spec)."""
    return bool(changes.previous_instance_types) or changes.previous_container is not None


def status_after_cleanup(code: str | None, changes: AppliedChanges, *, gave_up: bool) -> RestartStatus:
    """A restart whose changes were put back ended `rolled_back`; timeouts and cancels keep their name."""
    return failure_status(code, rolled_back=reverts_something(changes) and not gave_up)


def status_after_abandon(current: RestartStatus, code: str | None) -> RestartStatus:
    """Abandoning never rolled anything back; a status already concluded stays."""
    if current != "restarting":
        return current
    return failure_status(code, rolled_back=False)


def rollback_notes(changes: AppliedChanges) -> list[str]:
    """What a rollback cannot undo, said plainly in the record."""
    notes = []
    if changes.grown_volumes:
        notes.append(STORAGE_NOTE)
    if changes.system_updates_applied:
        notes.append(SYSTEM_UPDATES_NOTE)
    if changes.replaced_root_volumes:
        notes.append(ROOT_VOLUMES_NOTE)
    return notes


def left_stopped_note(instance_ids: list[str], instance_type: str) -> str:
    return (
        f"Instances {', '.join(instance_ids)} are stopped: EC2 had no capacity to start them again as "
        f"{instance_type} (InsufficientInstanceCapacity). Start them when capacity is available, or "
        "reserve it (On-Demand Capacity Reservation, EC2 Capacity Blocks for ML)."
    )


def cleanup_failed_note(error_name: str) -> str:
    return f"cleanup failed: {error_name}; cluster needs attention"


def applied_after_rollback(
    applied: Sequence[str], change_lines: Mapping[str, Sequence[str]], changes: AppliedChanges
) -> list[str]:
    """The applied configuration lines once a reverted instance type no longer counts as applied."""
    if not changes.previous_instance_types:
        return list(applied)
    reverted = change_lines.get("instance_type", [])
    return [line for line in applied if line not in reverted]


def cluster_status_after_failure(
    previous_status: ClusterStatus,
    *,
    gave_up: bool,
    services_restored: bool,
    all_stopped: bool,
    left_stopped: bool = False,
) -> ClusterStatus:
    """A stopped cluster goes back to stopped; a running one runs again if its services came back,
    or is stopped when EC2 had no capacity to start it again (`left_stopped`)."""
    if left_stopped and all_stopped and not gave_up:
        return "stopped"
    if previous_status == "stopped" and not gave_up:
        return "stopped" if all_stopped else "error"
    services_ok = services_restored or previous_status == "stopped"
    return "running" if services_ok and not gave_up else "error"


def failure_summary(failed: Sequence[CommandInvocation]) -> list[dict[str, Any]]:
    """Per instance, what a failed command answered (the tail of stderr only)."""
    return [
        {
            "instance_id": i.instance_id,
            "status": i.status,
            "response_code": i.response_code,
            "stderr": i.stderr[-STDERR_TAIL_CHARS:],
        }
        for i in failed
    ]
