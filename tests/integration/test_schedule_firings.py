"""Schedules firing the way Scheduler fires them (the target's Input, context attributes filled in)
into the real ScheduledRolloutFunction, which starts a rollout on the real rollout ASL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from restarter.handlers.schedule import lambda_handler as schedule_handler
from restarter_local.engine import LocalAws
from restarter_local.lambdas import LocalLambdaContext
from tests.conftest import load_event
from tests.integration.harness import WEEKLY, ApiClient, Seed, ml_fleet, restarts_of

# ---------------------------------------------------------------- firing


def test_a_firing_starts_a_rollout_over_the_targets_resolved_when_it_fires(
    api: ApiClient, seed: Seed, aws: LocalAws
) -> None:
    fleet = ml_fleet(seed)
    api.call("POST", "/v1/schedules", WEEKLY)
    late = seed(id="cluster_added_later", name="ml-late", instance_count=1, labels={"team": "ml"})
    seed(id="cluster_research", name="research", instance_count=1, labels={"team": "research"})
    when = aws.clock.now().replace(microsecond=0)

    # When Scheduler fires the schedule
    answer = aws.fire_schedule("weekly-ml-maintenance", "restarter-default", when)

    # Then one rollout runs over the clusters that match now, the later one included
    assert answer["success"] is True and answer["data"]["started"] is True
    assert answer["data"]["clusters"] == sorted([c.id for c in fleet] + [late.id])
    rollout_id = answer["data"]["rollout_id"]
    aws.wait_for_rollouts()
    rollout = api.call("GET", f"/v1/rollouts/{rollout_id}").json()["data"]
    assert rollout["status"] == "completed" and rollout["trigger"] == "schedule"
    assert rollout["successful_updates"] == rollout["total_clusters"] == 3
    assert rollout["maintenance_window"] == f"weekly-ml-maintenance@{when.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    restart = restarts_of(aws, fleet[0].id)[0]
    assert restart.trigger == "schedule" and restart.requested_by == f"rollout:{rollout_id}"
    assert restart.request["grace_period_minutes"] == 15  # the production policy, by label
    assert restarts_of(aws, "cluster_research") == []


def test_a_firing_delivered_twice_starts_one_rollout(api: ApiClient, seed: Seed, aws: LocalAws) -> None:
    fleet = ml_fleet(seed)
    api.call("POST", "/v1/schedules", WEEKLY)
    when = aws.clock.now().replace(microsecond=0)

    first = aws.fire_schedule("weekly-ml-maintenance", "restarter-default", when)
    again = aws.fire_schedule("weekly-ml-maintenance", "restarter-default", when, attempt=2)
    aws.wait_for_rollouts()

    assert again["data"]["started"] is False
    assert again["data"]["rollout_id"] == first["data"]["rollout_id"]
    assert [len(restarts_of(aws, c.id)) for c in fleet] == [1, 1]
    assert len(aws.rollout_executions()) == 1


def test_a_firing_after_its_window_starts_no_restart(api: ApiClient, seed: Seed, aws: LocalAws) -> None:
    fleet = ml_fleet(seed)
    api.call("POST", "/v1/schedules", {**WEEKLY, "window_minutes": 60})

    # delivered two hours after the scheduled time (Scheduler's retries, a long outage)
    answer = aws.fire_schedule("weekly-ml-maintenance", "restarter-default", aws.clock.now() - timedelta(hours=2))
    aws.wait_for_rollouts()

    rollout = api.call("GET", f"/v1/rollouts/{answer['data']['rollout_id']}").json()["data"]
    assert [r["status"] for r in rollout["results"]] == ["skipped_window_closed"] * len(fleet)
    assert all(restarts_of(aws, c.id) == [] for c in fleet)


def test_a_firing_covers_only_its_tenants_clusters(api: ApiClient, seed: Seed, aws: LocalAws) -> None:
    ours = ml_fleet(seed)
    theirs = ml_fleet(seed, tenant_id="globex")
    api.call("POST", "/v1/schedules", WEEKLY)

    answer = aws.fire_schedule("weekly-ml-maintenance", "restarter-default")
    aws.wait_for_rollouts()

    assert answer["data"]["clusters"] == [c.id for c in ours]
    assert all(restarts_of(aws, c.id) == [] for c in theirs)
    assert api.call("GET", f"/v1/rollouts/{answer['data']['rollout_id']}", key="other").status == 404


def test_a_deleted_schedule_no_longer_fires(api: ApiClient, seed: Seed, aws: LocalAws) -> None:
    ml_fleet(seed)
    api.call("POST", "/v1/schedules", WEEKLY)

    deleted = api.call("DELETE", "/v1/schedules/weekly-ml-maintenance")

    assert deleted.status == 200 and deleted.json()["data"]["name"] == "weekly-ml-maintenance"
    assert api.call("GET", "/v1/schedules").json()["data"] == []
    assert api.call("GET", "/v1/schedules/weekly-ml-maintenance").status == 404
    with pytest.raises(aws.client("scheduler").exceptions.ResourceNotFoundException):
        aws.fire_schedule("weekly-ml-maintenance", "restarter-default")
    assert aws.deps is not None
    actions = [e["action"] for e in aws.deps.audit.entries("schedule:restarter-default/weekly-ml-maintenance")]
    assert sorted(actions) == ["schedule.created", "schedule.deleted"]


def test_the_sample_firing_event_starts_its_rollout(seed: Seed, aws: LocalAws, api: ApiClient) -> None:
    seed(labels={"team": "ml"})  # cluster_abc123, the sample's docker_updates target

    answer = schedule_handler(load_event("schedule_firing.json"), LocalLambdaContext("ScheduledRolloutFunction"))
    aws.wait_for_rollouts()

    assert answer["success"] is True and answer["data"]["started"] is True
    assert answer["data"]["clusters"] == ["cluster_abc123"]
    assert answer["data"]["maintenance_window"] == "weekly-ml-maintenance@2024-01-15T02:00:00Z"
    # the sample's scheduled time is long past: its window (4 h from it) has closed
    rollout = api.call("GET", f"/v1/rollouts/{answer['data']['rollout_id']}").json()["data"]
    assert [r["status"] for r in rollout["results"]] == ["skipped_window_closed"]
    assert restarts_of(aws, "cluster_abc123") == []


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"schedule_name": "x", "rollout": {"labels": {"a": "b"}}},
        {**load_event("schedule_firing.json"), "scheduled_time": "<aws.scheduler.scheduled-time>"},
        {**load_event("schedule_firing.json"), "rollout": {"labels": {"a": "b"}, "request": {"timeout_minutes": 0}}},
    ],
)
def test_a_firing_that_can_never_work_is_answered_not_raised(aws: LocalAws, event: dict[str, Any]) -> None:
    answer = schedule_handler(event, LocalLambdaContext("ScheduledRolloutFunction"))

    assert answer["success"] is False and answer["error"]["code"] == "VALIDATION_ERROR"
    assert aws.rollout_executions() == []
