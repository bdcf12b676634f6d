"""AlarmRecoveryFunction end to end, the ladder and the budget: a failed recovery escalates, alarms
within the cooldown climb one step until the budget is spent, the policy's strategy is run, a
restart in flight is recorded without error."""

from __future__ import annotations

from datetime import timedelta

import pytest

from restarter.adapters.recovery_store import RecoveryStore
from restarter.services.restart_intake import accept_restart
from restarter_local.engine import LocalAws
from tests.integration.harness import (
    INSTANCE_ID,
    EventCapture,
    Seed,
    alarm_audit,
    event,
    finished,
    seed_instance_cluster,
    send,
)


def test_given_the_previous_recovery_failed_when_the_alarm_fires_again_then_it_escalates_to_the_latest_snapshot(
    aws: LocalAws, seed: Seed, recovery: RecoveryStore
) -> None:
    # cooldown off, so that only the failure escalates
    cluster = seed_instance_cluster(
        seed, labels={"restarter:recovery-cooldown-minutes": "0"}, checkpoints=["snap_old01", "snap_new02"]
    )
    aws.agent.close_port(INSTANCE_ID, 8888)
    first = send(event())
    assert first["strategy"] == "restart"
    assert finished(aws, first["restart_id"]).status in ("failed", "rolled_back")
    aws.agent.open_port(INSTANCE_ID, 8888)

    second = send(event(event_id="1f2e3d4c-5b6a-4978-8a9b-0c1d2e3f4a5b"))

    assert (second["action"], second["strategy"], second["escalated_from"]) == (
        "recovery_started",
        "restore_snapshot",
        "restart",
    )
    assert second["reasons"] == [f"previous recovery {first['restart_id']} (restart) failed"]
    record = finished(aws, second["restart_id"])
    assert record.status == "ready"
    assert record.request["restore_from_snapshot"] == "snap_new02"
    assert record.target.restore_snapshot_id == "snap_new02"
    assert cluster.id == record.cluster_id


def test_given_alarms_again_within_the_cooldown_when_they_fire_then_each_climbs_one_step_until_the_budget(
    aws: LocalAws, seed: Seed, recovery: RecoveryStore, published: EventCapture
) -> None:
    seed_instance_cluster(seed, checkpoints=["snap_only01"])
    strategies = []
    for n in range(3):
        data = send(event(event_id=f"00000000-0000-4000-8000-00000000000{n}"))
        assert data["action"] == "recovery_started"
        strategies.append(data["strategy"])
        assert finished(aws, data["restart_id"]).status == "ready"
    assert strategies == ["restart", "restore_snapshot", "rebuild"]

    fourth = send(event(event_id="00000000-0000-4000-8000-000000000009"))

    assert fourth["action"] == "budget_exhausted"
    assert len(aws.executions()) == 3


def test_given_the_budget_is_spent_when_the_alarm_fires_then_no_restart_and_an_event_says_so(
    aws: LocalAws, seed: Seed, recovery: RecoveryStore, published: EventCapture
) -> None:
    cluster = seed_instance_cluster(seed, labels={"restarter:recovery-budget": "1"})
    first = send(event())
    assert finished(aws, first["restart_id"]).status == "ready"
    published.drain()

    second = send(event(event_id="2b3c4d5e-6f70-4182-93a4-b5c6d7e8f901"))

    assert second["action"] == "budget_exhausted"
    assert len(aws.executions()) == 1
    [exhausted] = [e for e in published.drain() if e["detail-type"] == "Recovery Budget Exhausted"]
    assert exhausted["source"] == "restarter"
    assert exhausted["resources"] == ["arn:aws:cloudwatch:us-east-1:123456789012:alarm:ServerCpuTooHigh"]
    detail = exhausted["detail"]
    assert (detail["cluster_id"], detail["budget"], detail["recoveries_in_window"]) == (cluster.id, 1, 1)
    assert detail["alarm_name"] == "ServerCpuTooHigh" and detail["budget_resets_at"]
    assert [a["outcome"] for a in alarm_audit(aws, cluster.id)] == ["recovery_started", "budget_exhausted"]


def test_given_restore_snapshot_policy_when_the_alarm_fires_then_the_latest_checkpoint_is_restored(
    aws: LocalAws, seed: Seed, recovery: RecoveryStore
) -> None:
    seed_instance_cluster(
        seed,
        labels={"restarter:recovery": "restore_snapshot"},
        checkpoints=["snap_first1", "snap_second2", "snap_third3"],
    )

    data = send(event())

    assert (data["strategy"], data.get("escalated_from")) == ("restore_snapshot", None)
    record = finished(aws, data["restart_id"])
    assert record.status == "ready"
    assert record.request["restore_from_snapshot"] == "snap_third3"
    assert record.request["force"] is True
    assert "root_volume: current -> snap_third3" in record.configuration_updates.applied


def test_given_rebuild_policy_when_the_alarm_fires_then_the_template_image_runs_in_recovery_mode(
    aws: LocalAws, seed: Seed, recovery: RecoveryStore
) -> None:
    seed_instance_cluster(seed, labels={"restarter:recovery": "rebuild"})

    data = send(event())

    assert data["strategy"] == "rebuild"
    record = finished(aws, data["restart_id"])
    assert record.status == "ready"
    assert record.request["update_docker_image"] == "tensorone/pytorch:2.1-cuda12.1"
    assert record.request["environment_updates"] == {"RECOVERY_MODE": "<redacted>", "RECOVERY_TIMESTAMP": "<redacted>"}
    assert "environment.RECOVERY_MODE: (unset) -> <redacted>" in record.configuration_updates.applied
    assert "environment.RECOVERY_TIMESTAMP: (unset) -> <redacted>" in record.configuration_updates.applied


@pytest.mark.time_scale(60)
def test_given_a_restart_in_flight_when_the_alarm_fires_then_it_is_recorded_and_answered_without_error(
    aws: LocalAws, seed: Seed, recovery: RecoveryStore
) -> None:
    cluster = seed_instance_cluster(seed)
    assert aws.deps is not None
    running = accept_restart(aws.deps, cluster.id, {}, trigger="cli", requested_by="tests@example.com")

    data = send(event())

    assert (data["action"], data["error_code"]) == ("refused", "INVALID_STATE")
    assert len(aws.executions()) == 1
    assert recovery.history(cluster.id, aws.clock.now() - timedelta(hours=1)) == []
    assert alarm_audit(aws, cluster.id)[0]["outcome"] == "refused"
    refused = [e for e in aws.deps.audit.entries(cluster.id) if e["action"] == "restart.requested"]
    assert sorted((e["outcome"], e["details"]["trigger"]) for e in refused) == [
        ("accepted", "cli"),
        ("refused", "alarm"),
    ]
    assert finished(aws, running.id).status == "ready"
