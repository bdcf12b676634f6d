"""Restarts whose execution ended without concluding them.

Inside the state machine every failure is caught and cleaned up. Three ends escape it: the
execution is stopped (StopExecution, the console), it runs past the state machine's own
`TimeoutSeconds`, or cleanup itself fails. Each leaves the record `restarting`, the cluster
pointing at it and its lock held until the lock expires. EventBridge reports every such end
("Step Functions Execution Status Change"); this finishes the restart the same way a caught
failure is finished: a cleanup execution rolls back what the restart changed, records the
error and releases the lock. If that cleanup execution also ends without concluding, the
restart is abandoned directly (recorded, cluster `error`, lock released) so that nothing waits
on a lock that no execution will release.
"""

from __future__ import annotations

from typing import Any

from restarter.domain.errors import RestarterError
from restarter.domain.models import RestartRecord
from restarter.observability import logger
from restarter.wiring import Dependencies

ENDED_STATUSES = frozenset({"FAILED", "TIMED_OUT", "ABORTED"})
CLEANUP_SUFFIX = "-cleanup"
ERROR_NAMES = {"ABORTED": "ExecutionAborted", "TIMED_OUT": "ExecutionTimedOut", "FAILED": "ExecutionFailed"}


def conclude_ended_execution(
    deps: Dependencies, *, execution_name: str, execution_arn: str, status: str, cause: str | None = None
) -> dict[str, Any]:
    """Finish the restart of an execution that ended; a no-op when it was concluded already."""
    if status not in ENDED_STATUSES:
        return {"action": "none", "reason": f"execution {status.lower()}"}
    restart_id = execution_name.removesuffix(CLEANUP_SUFFIX)
    loaded = deps.restarts.get(restart_id)
    if loaded is None:
        logger.info("ended execution is not a restart", execution_arn=execution_arn)
        return {"action": "none", "reason": "no such restart"}
    record = loaded[0]
    if record.is_terminal:
        return {"action": "none", "reason": "restart already concluded", "restart_id": record.id}
    if deps.executions is None:
        raise RestarterError("No state machine is configured", {"setting": "STATE_MACHINE_ARN"})
    error = {
        "Error": ERROR_NAMES[status],
        "Cause": cause or f"The restart's execution ended {status.lower().replace('_', ' ')} before cleaning up",
    }
    if execution_name.endswith(CLEANUP_SUFFIX) or execution_arn not in (record.execution_arn, None):
        # the cleanup execution itself ended early (or an execution we do not know): last resort.
        # The runner (every phase) is imported here, not at the top: the Api function imports
        # this module for cancels, and its cold start should not pay for the restart phases.
        from restarter.services.restart.runner import RestartRunner

        RestartRunner(deps).abandon(record.id, error)
        logger.warning("restart abandoned after its cleanup ended", restart_id=record.id, status=status)
        return {"action": "abandoned", "restart_id": record.id}
    return {"action": "cleanup_started", "restart_id": record.id, "execution_arn": start_cleanup(deps, record, error)}


def start_cleanup(deps: Dependencies, record: RestartRecord, error: dict[str, Any]) -> str:
    """A cleanup-only execution of the restart state machine; at most one per restart."""
    assert deps.executions is not None
    arn = deps.executions.start_once(
        f"{record.id}{CLEANUP_SUFFIX}",
        {
            "restart_id": record.id,
            "cluster_id": record.cluster_id,
            "error": error,
            "step": {"done": True, "next": "cleanup", "attempt": 0},
        },
    )
    logger.warning("restart execution ended early, cleanup started", restart_id=record.id, cleanup_execution=arn)
    return arn


def conclude_if_execution_ended(deps: Dependencies, record: RestartRecord) -> None:
    """For a cancel: a restart whose execution is gone would never see the cancel flag."""
    if record.is_terminal or deps.executions is None or not record.execution_arn:
        return
    status = deps.executions.status(record.execution_arn)
    if status in ENDED_STATUSES:
        name = record.execution_arn.rsplit(":", 1)[-1]
        conclude_ended_execution(deps, execution_name=name, execution_arn=record.execution_arn, status=status)
