"""A restart whose execution ended outside its own cleanup (stopped, past the state machine's
TimeoutSeconds, cleanup failed) is finished by RestartExecutionEndedFunction: rolled back by a
cleanup execution, recorded, its lock released. Delivered with `events/restart_execution_aborted.json`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import pytest

from restarter.domain.models import Cluster, RestartRecord
from restarter.services.ended_executions import conclude_ended_execution
from restarter.services.restart_api import cancel_restart
from restarter.services.restart_intake import accept_restart
from restarter_local.engine import LocalAws
from tests.conftest import load_event
from tests.integration.harness import RestartOutcome, read_outcome

Seed = Callable[..., Cluster]
Run = Callable[..., RestartOutcome]


@pytest.fixture(autouse=True)
def manual_delivery(aws: LocalAws) -> None:
    """These tests deliver the status changes themselves (the engine's own rule is off)."""
    aws.deliver_execution_events = False


def start_restart_that_hangs(aws: LocalAws, cluster: Cluster) -> RestartRecord:
    """A restart stuck in `starting_services`: its first instance never passes status checks."""
    assert aws.deps is not None
    aws.agent.set_never_healthy(cluster.instance_ids[0])
    record = accept_restart(aws.deps, cluster.id, {}, trigger="cli", requested_by="tests@example.com")
    deadline = time.monotonic() + 30
    while aws.deps.restarts.get(record.id)[0].progress.phase != "starting_services":  # type: ignore[index]
        assert time.monotonic() < deadline, "the restart never reached starting_services"
        time.sleep(0.02)
    return record


def status_change_event(aws: LocalAws, record: RestartRecord, status: str) -> dict[str, Any]:
    event = copy.deepcopy(load_event("restart_execution_aborted.json"))
    arn = record.execution_arn or ""
    event["resources"] = [arn]
    event["detail"].update(
        executionArn=arn,
        stateMachineArn=aws.settings.state_machine_arn if aws.settings else "",
        name=arn.rsplit(":", 1)[-1],
        status=status,
    )
    return event


def deliver(aws: LocalAws, event: dict[str, Any]) -> dict[str, Any]:
    result, errored = aws.registry.invoke("RestartExecutionEndedFunction", event)
    assert not errored, result
    return dict(result)


def stop(aws: LocalAws, record: RestartRecord) -> None:
    sfn = aws.client("stepfunctions")
    sfn.stop_execution(executionArn=record.execution_arn, error="Stopped", cause="from the console")
    assert aws.wait_for_execution(record.execution_arn or "")["status"] == "ABORTED"


def test_a_stopped_restart_is_cleaned_up_and_its_lock_released(aws: LocalAws, seed: Seed) -> None:
    assert aws.deps is not None
    # Given a restart whose execution an operator stopped while it waited for the instances
    cluster = seed()
    record = start_restart_that_hangs(aws, cluster)
    stop(aws, record)
    aws.agent.clear_never_healthy(cluster.instance_ids[0])
    # (nothing inside the state machine concluded it: the lock is still held)
    assert aws.deps.restarts.get(record.id)[0].status == "restarting"  # type: ignore[index]
    assert aws.deps.locks.holder(cluster.id) == record.id

    # When EventBridge delivers the execution's ABORTED status change, twice
    event = status_change_event(aws, record, "ABORTED")
    first = deliver(aws, event)
    second = deliver(aws, event)

    # Then one cleanup execution ran, the restart is recorded as cancelled and the lock released
    assert first["data"]["action"] == "cleanup_started"
    assert second["data"]["action"] in ("cleanup_started", "none")
    cleanup = aws.wait_for_execution(first["data"]["execution_arn"])
    assert cleanup["status"] == "FAILED"  # the state machine's RestartFailed end, after cleanup
    names = [e["name"] for e in aws.executions()]
    assert names.count(f"{record.id}-cleanup") == 1
    outcome = read_outcome(aws, record.id, cleanup)
    assert outcome.record.status == "cancelled"
    assert outcome.record.error is not None and outcome.record.error.code == "CANCELLED"
    assert outcome.record.error.phase == "starting_services"
    assert outcome.lock_holder is None
    assert outcome.cluster.current_restart_id is None and outcome.cluster.status == "running"
    # and a delivery after the conclusion changes nothing
    assert deliver(aws, event)["data"] == {
        "action": "none",
        "reason": "restart already concluded",
        "restart_id": record.id,
    }
    # and the cluster takes a new restart
    assert accept_restart(aws.deps, cluster.id, {}, trigger="cli", requested_by="tests@example.com").id


def test_a_cleanup_execution_that_ends_early_abandons_the_restart(aws: LocalAws, seed: Seed) -> None:
    assert aws.deps is not None
    # Given a stopped restart whose cleanup execution also ended without concluding it
    cluster = seed()
    record = start_restart_that_hangs(aws, cluster)
    stop(aws, record)

    # When the cleanup execution's end is reported
    result = conclude_ended_execution(
        aws.deps,
        execution_name=f"{record.id}-cleanup",
        execution_arn=f"{record.execution_arn}-cleanup",
        status="TIMED_OUT",
    )

    # Then the restart is abandoned: recorded, cluster left in `error` for recovery, lock released
    assert result == {"action": "abandoned", "restart_id": record.id}
    stored, _ = aws.deps.restarts.get(record.id)  # type: ignore[misc]
    assert stored.status == "timed_out"
    assert "cluster needs attention" in stored.rollback_notes[-1]
    cluster_after = aws.deps.clusters.get(cluster.id)
    assert cluster_after is not None and cluster_after.status == "error"
    assert cluster_after.current_restart_id is None
    assert aws.deps.locks.holder(cluster.id) is None


def test_a_failure_the_state_machine_cleaned_up_is_left_alone(aws: LocalAws, seed: Seed, run_restart: Run) -> None:
    assert aws.deps is not None
    # Given a restart that failed its health checks and was rolled back by the state machine
    cluster = seed()
    aws.agent.close_port(cluster.instance_ids[0], 8888)
    outcome = run_restart(cluster.id, {"update_docker_image": "tensorone/pytorch:2.2-cuda12.1"})
    assert outcome.execution["status"] == "FAILED" and outcome.record.status == "rolled_back"

    # When its FAILED status change arrives
    result = deliver(aws, status_change_event(aws, outcome.record, "FAILED"))

    # Then nothing happens: no cleanup execution, the record unchanged
    assert result["data"]["action"] == "none"
    assert [e["name"] for e in aws.executions()] == [outcome.record.id]
    assert aws.deps.restarts.get(outcome.record.id)[0].status == "rolled_back"  # type: ignore[index]


def test_cancelling_a_restart_whose_execution_is_gone_cleans_it_up(aws: LocalAws, seed: Seed) -> None:
    assert aws.deps is not None
    # Given a restart whose execution was stopped and whose status change was never delivered
    cluster = seed()
    record = start_restart_that_hangs(aws, cluster)
    stop(aws, record)
    aws.agent.clear_never_healthy(cluster.instance_ids[0])

    # When a user cancels it
    cancel_restart(aws.deps, cluster.tenant_id, record.id, "ops@example.com")

    # Then the cancel starts the cleanup itself, which concludes the restart
    cleanup = aws.wait_for_execution(f"{record.execution_arn}-cleanup")
    outcome = read_outcome(aws, record.id, cleanup)
    assert outcome.record.status == "cancelled"
    assert outcome.lock_holder is None


@pytest.mark.parametrize("status", ["SUCCEEDED", "RUNNING"])
def test_other_statuses_are_ignored(aws: LocalAws, status: str) -> None:
    assert aws.deps is not None
    result = conclude_ended_execution(aws.deps, execution_name="rst_1", execution_arn="arn", status=status)
    assert result["action"] == "none"
