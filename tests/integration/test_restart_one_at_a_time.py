"""One restart at a time per cluster, and the cluster's state deciding the restart: a second restart
or a transitional state is refused, a stopped cluster is started, an error cluster is forced, every
terminal path is audited, an abandoned restart releases the lock."""

from __future__ import annotations

import pytest

from restarter.domain.errors import InvalidStateError
from restarter_local.engine import LocalAws
from tests.integration.harness import (
    Run,
    Seed,
    ec2_calls,
    read_outcome,
)

# ---------------------------------------------------------------- one restart at a time


def test_second_restart_while_one_runs_is_invalid_state(aws: LocalAws, seed: Seed) -> None:
    from restarter.services.restart_intake import accept_restart

    assert aws.deps is not None
    cluster = seed()
    first = accept_restart(aws.deps, cluster.id, {}, trigger="cli", requested_by="a")

    with pytest.raises(InvalidStateError) as refused:
        accept_restart(aws.deps, cluster.id, {"force": True}, trigger="cli", requested_by="b")

    assert refused.value.to_envelope() == {
        "success": False,
        "error": {
            "code": "INVALID_STATE",
            "message": "Cluster cannot be restarted in current state",
            "details": {
                "current_status": "restarting",
                "allowed_states": ["running", "stopped", "error"],
                "suggestion": "Wait for the restart in progress to finish, or cancel it",
                "restart_id": first.id,
            },
        },
    }
    aws.wait_for_execution(first.execution_arn or "")
    assert aws.deps.locks.holder(cluster.id) is None
    assert len(aws.executions()) == 1


def test_the_lock_refuses_a_racing_second_restart_even_if_the_cluster_record_lags(aws: LocalAws, seed: Seed) -> None:
    from restarter.services.restart_intake import accept_restart

    assert aws.deps is not None
    cluster = seed()
    first = accept_restart(aws.deps, cluster.id, {}, trigger="cli", requested_by="a")
    # a second intake that read the cluster before the first one wrote it
    aws.deps.clusters.put(cluster)

    with pytest.raises(InvalidStateError) as refused:
        accept_restart(aws.deps, cluster.id, {}, trigger="cli", requested_by="b")

    assert refused.value.details["restart_id"] == first.id
    assert aws.deps.restarts.get(first.id) is not None
    aws.wait_for_execution(first.execution_arn or "")


@pytest.mark.parametrize("status", ["starting", "stopping", "restarting"])
def test_cluster_in_a_transitional_state_cannot_restart(aws: LocalAws, seed: Seed, status: str) -> None:
    from restarter.services.restart_intake import accept_restart

    assert aws.deps is not None
    cluster = seed()
    aws.deps.clusters.put(cluster.model_copy(update={"status": status}))

    with pytest.raises(InvalidStateError) as refused:
        accept_restart(aws.deps, cluster.id, {}, trigger="cli", requested_by="a")

    assert refused.value.details["current_status"] == status
    assert refused.value.details["allowed_states"] == ["running", "stopped", "error"]
    assert refused.value.details["suggestion"]
    assert aws.executions() == []


def test_stopped_cluster_is_started_without_a_graceful_stop(aws: LocalAws, seed: Seed, run_restart: Run) -> None:
    cluster = seed(status="stopped")

    outcome = run_restart(cluster.id)

    assert outcome.record.status == "ready"
    assert "stopping_processes" not in outcome.record.plan
    assert ec2_calls(aws, "StartInstances") == 1
    assert outcome.cluster.status == "running"


def test_error_cluster_recovers_with_a_forced_restart(aws: LocalAws, seed: Seed, run_restart: Run) -> None:
    cluster = seed(status="error")

    outcome = run_restart(cluster.id, {"force": True, "apply_system_updates": True, "restart_reason": "Error recovery"})

    assert outcome.record.status == "ready"
    assert outcome.cluster.status == "running"


def test_every_terminal_path_is_audited(aws: LocalAws, seed: Seed, run_restart: Run) -> None:
    cluster = seed()
    outcome = run_restart(cluster.id, {"restart_reason": "audit me"})
    assert aws.deps is not None
    entries = aws.deps.audit.entries(cluster.id)
    actions = [(e["action"], e["outcome"]) for e in entries]
    assert ("restart.requested", "accepted") in actions
    assert ("restart.finished", "ready") in actions
    requested = next(e for e in entries if e["action"] == "restart.requested")
    assert requested["actor"] == "tests@example.com"
    assert requested["details"]["reason"] == "audit me"
    assert requested["details"]["restart_id"] == outcome.record.id


def test_abandon_records_the_failure_and_releases_the_lock(aws: LocalAws, seed: Seed) -> None:
    """If cleanup itself keeps failing, the last resort still frees the cluster."""
    from restarter.handlers.restart_step import lambda_handler
    from restarter.services.restart_intake import accept_restart
    from restarter_local.lambdas import LocalLambdaContext

    assert aws.deps is not None
    cluster = seed()
    accepted = accept_restart(aws.deps, cluster.id, {}, trigger="cli", requested_by="a")
    aws.wait_for_execution(accepted.execution_arn or "")
    # simulate a record stuck mid-restart with its lock held
    stored = aws.deps.restarts.get(accepted.id)
    assert stored is not None
    record, version = stored
    record.status = "restarting"
    aws.deps.restarts.put(record, version)
    aws.deps.locks.acquire(cluster.id, accepted.id, aws.clock.now(), aws.clock.now())

    result = lambda_handler(
        {"action": "abandon", "restart_id": accepted.id, "error": {"Error": "States.TaskFailed", "Cause": "boom"}},
        LocalLambdaContext("RestartStepFunction"),
    )

    assert result["done"] is True
    outcome = read_outcome(aws, accepted.id, {})
    assert outcome.record.status == "failed"
    assert outcome.lock_holder is None
    assert outcome.cluster.status == "error"
