"""Scheduled maintenance rollouts: schedules in EventBridge Scheduler (moto), managed through the
API, fired the way Scheduler fires them (the target's Input, context attributes filled in) into
the real ScheduledRolloutFunction, which starts a rollout on the real rollout ASL."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from tests.conftest import ApiClient, explain_restarts, load_event

from restarter.domain.models import Cluster
from restarter.domain.schedules import ScheduleFiring, ScheduleRequest, check_schedule_expression, schedule_group
from restarter.handlers.schedule import lambda_handler as schedule_handler
from restarter.local.engine import LocalAws, LocalLambdaContext

Seed = Callable[..., Cluster]

WEEKLY = {
    "name": "weekly-ml-maintenance",
    "schedule_expression": "cron(0 2 ? * SUN *)",
    "timezone": "Europe/Berlin",
    "flexible_window_minutes": 15,
    "window_minutes": 240,
    "description": "Sunday night patching of the ML fleet",
    "rollout": {
        "labels": {"team": "ml"},
        "request": {"apply_system_updates": True, "timeout_minutes": 30},
        "max_concurrency": 2,
        "failure_threshold": {"percentage": 25},
    },
}


def ml_fleet(seed: Seed, count: int = 2, tenant_id: str = "default") -> list[Cluster]:
    return [
        seed(
            id=f"cluster_{tenant_id}_{i}",
            name=f"ml-{tenant_id}-{i}",
            instance_count=1,
            tenant_id=tenant_id,
            labels={"team": "ml", "env": "production" if i == 0 else "dev"},
        )
        for i in range(count)
    ]


def restarts_of(aws: LocalAws, cluster_id: str) -> list[Any]:
    assert aws.deps is not None
    return aws.deps.restarts.list_for_cluster(cluster_id)[0]


# ---------------------------------------------------------------- the rules


@pytest.mark.parametrize(
    "expression",
    ["at(2026-12-01T02:00:00)", "rate(1 day)", "rate(7 days)", "rate(30 minutes)", "cron(0 2 ? * SUN *)"],
)
def test_scheduler_expressions_are_accepted(expression: str) -> None:
    assert check_schedule_expression(expression) == expression


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("rate(1 days)", "singular"),
        ("rate(2 day)", "singular"),
        ("rate(0 minutes)", "expected at("),
        ("at(2026-13-01T02:00:00)", "real date"),
        ("cron(0 2 * * *)", "six fields"),
        ("cron(0 2 * * MON *)", "exactly one"),
        ("every sunday", "expected at("),
    ],
)
def test_bad_expressions_are_refused_with_a_reason(expression: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        check_schedule_expression(expression)


def test_unknown_time_zone_is_refused() -> None:
    with pytest.raises(ValidationError, match="IANA"):
        ScheduleRequest.model_validate({**WEEKLY, "timezone": "Mars/Olympus"})


def test_a_firing_names_one_rollout_per_schedule_and_scheduled_time() -> None:
    event = load_event("schedule_firing.json")
    first = ScheduleFiring.model_validate(event)
    again = ScheduleFiring.model_validate({**event, "execution_id": "other", "attempt": "2"})
    next_week = ScheduleFiring.model_validate({**event, "scheduled_time": "2024-01-22T02:00:00Z"})

    assert first.rollout_id() == again.rollout_id() != next_week.rollout_id()
    spec = first.rollout_spec()
    assert spec.maintenance_window.id == "weekly-ml-maintenance@2024-01-15T02:00:00Z"
    assert spec.maintenance_window.end == datetime(2024, 1, 15, 6, 0, tzinfo=UTC)


def test_tenant_groups_are_valid_scheduler_group_names() -> None:
    assert schedule_group("default") == "restarter-default"
    odd = schedule_group("Acme Corp / ML")
    assert odd.startswith("restarter-t") and len(odd) <= 64


# ---------------------------------------------------------------- managing schedules through the API


def test_create_schedule_stores_it_in_eventbridge_scheduler(api: ApiClient, seed: Seed, aws: LocalAws) -> None:
    fleet = ml_fleet(seed)

    answer = api.call("POST", "/v1/schedules", WEEKLY)

    assert answer.status == 201, answer.body
    body = answer.json()
    assert body["meta"]["clusters_now"] == [c.id for c in fleet]
    view = body["data"]
    assert (view["name"], view["schedule_expression"], view["timezone"]) == (
        "weekly-ml-maintenance",
        "cron(0 2 ? * SUN *)",
        "Europe/Berlin",
    )
    assert view["flexible_window_minutes"] == 15 and view["window_minutes"] == 240 and view["enabled"] is True
    assert view["rollout"]["labels"] == {"team": "ml"}
    # what Scheduler holds: the tenant's group, our function as target, its role and DLQ,
    # and an Input with Scheduler's context attributes left for it to fill in
    stored = aws.client("scheduler").get_schedule(GroupName="restarter-default", Name="weekly-ml-maintenance")
    assert stored["FlexibleTimeWindow"] == {"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 15}
    target = stored["Target"]
    assert target["Arn"].endswith(":function:ScheduledRolloutFunction")
    assert target["RoleArn"].endswith("role/restarter-local-SchedulerRole")
    assert target["DeadLetterConfig"]["Arn"].endswith(":restarter-local-ScheduleDeadLetterQueue")
    sent = json.loads(target["Input"])
    assert sent["scheduled_time"] == "<aws.scheduler.scheduled-time>"
    assert sent["schedule_arn"] == "<aws.scheduler.schedule-arn>"
    assert sent["tenant_id"] == "default"
    # listed and readable
    listed = api.call("GET", "/v1/schedules").json()["data"]
    assert [s["name"] for s in listed] == ["weekly-ml-maintenance"]
    assert api.call("GET", "/v1/schedules/weekly-ml-maintenance").json()["data"] == view


def test_schedules_are_per_tenant(api: ApiClient, seed: Seed) -> None:
    ml_fleet(seed)
    api.call("POST", "/v1/schedules", WEEKLY)

    assert api.call("GET", "/v1/schedules", key="other").json()["data"] == []
    assert api.call("GET", "/v1/schedules/weekly-ml-maintenance", key="other").status == 404
    assert api.call("DELETE", "/v1/schedules/weekly-ml-maintenance", key="other").status == 404
    # the other tenant may use the same name in its own group
    assert api.call("POST", "/v1/schedules", {**WEEKLY, "rollout": {"name_pattern": "*"}}, key="other").status == 201


@pytest.mark.parametrize(
    ("change", "status", "code", "field"),
    [
        ({"schedule_expression": "rate(1 days)"}, 400, "VALIDATION_ERROR", "schedule_expression"),
        ({"timezone": "Mars/Olympus"}, 400, "VALIDATION_ERROR", "timezone"),
        ({"flexible_window_minutes": 2000}, 400, "VALIDATION_ERROR", "flexible_window_minutes"),
        ({"name": "no spaces allowed"}, 400, "VALIDATION_ERROR", "name"),
        ({"rollout": {"labels": {"team": "ml"}, "cluster_ids": ["x"]}}, 400, "VALIDATION_ERROR", "rollout"),
        (
            {"rollout": {"labels": {"team": "ml"}, "request": {"grace_period_minutes": 99}}},
            400,
            "VALIDATION_ERROR",
            None,
        ),
        ({"rollout": {"cluster_ids": ["cluster_missing"]}}, 404, "NOT_FOUND", None),
    ],
)
def test_invalid_schedules_are_refused_in_the_envelope(
    api: ApiClient, seed: Seed, aws: LocalAws, change: dict[str, Any], status: int, code: str, field: str | None
) -> None:
    ml_fleet(seed)

    answer = api.call("POST", "/v1/schedules", {**WEEKLY, **change})

    assert answer.status == status, answer.body
    error = answer.json()["error"]
    assert error["code"] == code
    if field:
        assert any(e["field"].startswith(field) for e in error["details"]["errors"]), error
    assert aws.client("scheduler").list_schedules()["Schedules"] == []


def test_a_schedule_name_is_taken_once(api: ApiClient, seed: Seed) -> None:
    ml_fleet(seed)
    api.call("POST", "/v1/schedules", WEEKLY)

    again = api.call("POST", "/v1/schedules", WEEKLY)

    assert again.status == 409 and again.json()["error"]["code"] == "CONFLICT"


def test_reading_schedules_needs_only_read_but_creating_needs_restart(api: ApiClient, seed: Seed) -> None:
    ml_fleet(seed)
    assert api.call("POST", "/v1/schedules", WEEKLY, key="reader").status == 403
    assert api.call("GET", "/v1/schedules", key="reader").status == 200


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


# ---------------------------------------------------------------- rollouts through the API

ROLLOUT = {
    "maintenance_window": {"id": "mw-2024-01-15"},
    "labels": {"team": "ml"},
    "request": {"timeout_minutes": 20},
    "max_concurrency": 2,
}


def test_post_rollout_restarts_the_tenants_matching_clusters(api: ApiClient, seed: Seed, aws: LocalAws) -> None:
    ours = ml_fleet(seed)
    theirs = ml_fleet(seed, tenant_id="globex")

    answer = api.call("POST", "/v1/rollouts", ROLLOUT)

    assert answer.status == 202, answer.body
    started = answer.json()["data"]
    assert started["status"] == "running" and started["trigger"] == "api"
    assert [r["cluster_id"] for r in started["results"]] == [c.id for c in ours]
    aws.wait_for_rollouts()
    done = api.call("GET", started["links"]["self"]).json()["data"]
    assert (done["status"], done["total_clusters"], done["successful_updates"]) == ("completed", 2, 2)
    assert done["maintenance_window"] == "mw-2024-01-15"
    assert all(r["success"] and r["downtime_seconds"] > 0 for r in done["results"])
    assert all(restarts_of(aws, c.id) == [] for c in theirs)
    assert api.call("GET", started["links"]["self"], key="other").status == 404


def test_a_rollout_naming_another_tenants_cluster_is_not_found(api: ApiClient, seed: Seed, aws: LocalAws) -> None:
    theirs = ml_fleet(seed, tenant_id="globex")

    answer = api.call("POST", "/v1/rollouts", {**ROLLOUT, "labels": None, "cluster_ids": [theirs[0].id]})

    assert answer.status == 404 and answer.json()["error"]["code"] == "NOT_FOUND"
    assert aws.rollout_executions() == []


def test_a_retried_rollout_request_with_its_idempotency_key_answers_the_same_rollout(
    api: ApiClient, seed: Seed, aws: LocalAws
) -> None:
    fleet = ml_fleet(seed)
    headers = {"Idempotency-Key": "mw-2024-01-15-ml"}

    first = api.call("POST", "/v1/rollouts", ROLLOUT, headers=headers)
    again = api.call("POST", "/v1/rollouts", ROLLOUT, headers=headers)
    other = api.call("POST", "/v1/rollouts", {**ROLLOUT, "max_concurrency": 1}, headers=headers)
    aws.wait_for_rollouts()

    assert (first.status, again.status, other.status) == (202, 200, 409)
    assert again.json()["data"]["rollout_id"] == first.json()["data"]["rollout_id"]
    assert again.json()["meta"]["replayed"] is True
    assert other.json()["error"]["code"] == "CONFLICT"
    assert [len(restarts_of(aws, c.id)) for c in fleet] == [1, 1]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**ROLLOUT, "cluster_ids": ["a"]}, "body"),
        ({**ROLLOUT, "max_concurrency": 0}, "max_concurrency"),
        ({**ROLLOUT, "failure_threshold": {"count": 1, "percentage": 10}}, "failure_threshold"),
        ({k: v for k, v in ROLLOUT.items() if k != "maintenance_window"}, "maintenance_window"),
        ({**ROLLOUT, "surprise": True}, "surprise"),
    ],
)
def test_invalid_rollouts_are_refused_with_the_field(
    api: ApiClient, seed: Seed, aws: LocalAws, body: dict[str, Any], field: str
) -> None:
    ml_fleet(seed)

    answer = api.call("POST", "/v1/rollouts", body)

    assert answer.status == 400, answer.body
    error = answer.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert any(field in e["field"] for e in error["details"]["errors"]), error
    assert aws.rollout_executions() == []


def test_resume_through_the_api_redoes_only_what_did_not_succeed(api: ApiClient, seed: Seed, aws: LocalAws) -> None:
    fleet = ml_fleet(seed)
    aws.agent.close_port(fleet[1].instance_ids[0], 8888)
    body = {**ROLLOUT, "docker_updates": {fleet[1].id: "tensorone/pytorch:2.2-cuda12.1"}}
    rollout_id = api.call("POST", "/v1/rollouts", body).json()["data"]["rollout_id"]
    aws.wait_for_rollouts()
    first = api.call("GET", f"/v1/rollouts/{rollout_id}").json()["data"]
    assert [r["success"] for r in first["results"]] == [True, False], explain_restarts(aws, first)
    assert first["links"]["resume"] == f"/v1/rollouts/{rollout_id}/resume"
    aws.agent.open_port(fleet[1].instance_ids[0], 8888)

    resumed = api.call("POST", f"/v1/rollouts/{rollout_id}/resume")
    aws.wait_for_rollouts()

    assert resumed.status == 202
    done = api.call("GET", f"/v1/rollouts/{rollout_id}").json()["data"]
    assert [r["success"] for r in done["results"]] == [True, True], explain_restarts(aws, done)
    assert done["attempt"] == 2
    assert [len(restarts_of(aws, c.id)) for c in fleet] == [1, 2]
    assert api.call("POST", f"/v1/rollouts/{rollout_id}/resume", key="other").status == 404
