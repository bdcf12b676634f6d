"""Scheduled maintenance rollouts: schedules in EventBridge Scheduler (moto), managed through the
API, fired the way Scheduler fires them (the target's Input, context attributes filled in) into
the real ScheduledRolloutFunction, which starts a rollout on the real rollout ASL."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from restarter.domain.models import Cluster
from restarter.domain.schedules import ScheduleFiring, ScheduleRequest, check_schedule_expression, schedule_group
from restarter.handlers.schedule import lambda_handler as schedule_handler
from restarter_local.engine import LocalAws
from restarter_local.lambdas import LocalLambdaContext
from restarter_local.template import load_template
from tests.conftest import load_event
from tests.integration.harness import ApiClient, explain_restarts

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
        # a firing that late would come at (or after) its window's end and skip every cluster
        ({"flexible_window_minutes": 240}, 400, "VALIDATION_ERROR", "flexible_window_minutes"),
        ({"flexible_window_minutes": 90, "window_minutes": 60}, 400, "VALIDATION_ERROR", "flexible_window_minutes"),
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
        ({**ROLLOUT, "max_concurrency": 41}, "max_concurrency"),  # an inline Map runs 40 at most
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


# ---------------------------------------------------------------- a start that failed, a resume in a later window


def test_given_start_execution_failed_after_the_rollout_was_saved_when_the_firing_comes_again_then_it_runs_once(
    api: ApiClient, seed: Seed, aws: LocalAws
) -> None:
    fleet = ml_fleet(seed)
    api.call("POST", "/v1/schedules", WEEKLY)
    when = aws.clock.now().replace(microsecond=0)
    # Given StartExecution throttled on every attempt the SDK makes (the rollout record is saved first)
    aws.agent.throttle("stepfunctions", "StartExecution", times=3)
    with pytest.raises(RuntimeError, match="TransientProviderError"):
        aws.fire_schedule("weekly-ml-maintenance", "restarter-default", when)
    assert aws.rollout_executions() == []

    # When Lambda delivers the firing again
    again = aws.fire_schedule("weekly-ml-maintenance", "restarter-default", when, attempt=2)
    aws.wait_for_rollouts()

    # Then this delivery starts the saved rollout: one execution, every cluster restarted once
    assert again["data"]["started"] is True
    assert len(aws.rollout_executions()) == 1
    rollout = api.call("GET", f"/v1/rollouts/{again['data']['rollout_id']}").json()["data"]
    assert (rollout["status"], rollout["successful_updates"]) == ("completed", len(fleet))
    assert [len(restarts_of(aws, c.id)) for c in fleet] == [1, 1]
    # and a third delivery starts nothing more
    third = aws.fire_schedule("weekly-ml-maintenance", "restarter-default", when, attempt=3)
    assert third["data"]["started"] is False and len(aws.rollout_executions()) == 1


def test_given_a_rollout_whose_window_closed_when_resumed_in_a_later_window_then_the_rest_runs_in_it(
    api: ApiClient, seed: Seed, aws: LocalAws
) -> None:
    fleet = ml_fleet(seed, 3)
    aws.agent.close_port(fleet[1].instance_ids[0], 8888)
    body = {
        **ROLLOUT,
        "max_concurrency": 1,
        "docker_updates": {fleet[1].id: "tensorone/pytorch:2.2-cuda12.1"},
        "failure_threshold": {"count": 1},
    }
    rollout_id = api.call("POST", "/v1/rollouts", body).json()["data"]["rollout_id"]
    aws.wait_for_rollouts()
    first = api.call("GET", f"/v1/rollouts/{rollout_id}").json()["data"]
    assert [r["status"] for r in first["results"]] == ["succeeded", "failed", "skipped"], explain_restarts(aws, first)
    earlier_error = first["results"][1]["error"]
    aws.agent.open_port(fleet[1].instance_ids[0], 8888)
    opens = (aws.clock.now() + timedelta(minutes=30)).replace(microsecond=0)
    window = {"id": "mw-2024-01-22", "start": opens.strftime("%Y-%m-%dT%H:%M:%SZ"), "duration_minutes": 120}

    # When it is resumed in next week's window
    resumed = api.call("POST", f"/v1/rollouts/{rollout_id}/resume", {"maintenance_window": window})
    assert resumed.status == 202, resumed.body
    # the failed cluster keeps its earlier error until it runs again
    waiting = resumed.json()["data"]
    assert (waiting["maintenance_window"], waiting["attempt"]) == ("mw-2024-01-22", 2)
    assert waiting["results"][1]["error"] == earlier_error and waiting["results"][1]["status"] in ("pending", "running")
    aws.wait_for_rollouts()

    # Then the clusters that had not succeeded run in it; the one that had keeps its result
    done = api.call("GET", f"/v1/rollouts/{rollout_id}").json()["data"]
    assert [r["success"] for r in done["results"]] == [True, True, True], explain_restarts(aws, done)
    assert done["results"][0] == first["results"][0]
    assert [len(restarts_of(aws, c.id)) for c in fleet] == [1, 2, 1]
    assert all(restarts_of(aws, c.id)[0].restart_initiated_at >= window["start"] for c in fleet[1:])
    assert done["maintenance_window"] == "mw-2024-01-22"
    # recorded on the rollout, and the earlier failures in its audit trail
    assert aws.deps is not None
    [audited] = [e for e in aws.deps.audit.entries(f"rollout:{rollout_id}") if e["action"] == "rollout.resumed"]
    assert audited["details"]["maintenance_window"]["id"] == "mw-2024-01-22"
    assert audited["details"]["earlier_failures"][fleet[1].id] == earlier_error


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"maintenance_window": {"id": "mw", "end": "2020-01-01T00:00:00Z"}}, "maintenance_window.end"),
        (
            {"maintenance_window": {"id": "mw", "end": "2099-01-01T00:00:00Z", "duration_minutes": 60}},
            "maintenance_window",
        ),
        ({"maintenance_window": {"id": "mw", "duration_minutes": 0}}, "maintenance_window.duration_minutes"),
        ({"maintenance_window": {"id": "mw", "start": "2099-01-01T00:00:00Z"}}, "maintenance_window.start"),
        ({"maintenance_window": {"id": "mw", "end": "2099-01-01T00:00:00"}}, "maintenance_window.end"),
        ({"window": {"id": "mw"}}, "window"),
    ],
)
def test_a_resume_with_an_invalid_window_is_refused_and_resumes_nothing(
    api: ApiClient, seed: Seed, aws: LocalAws, body: dict[str, Any], field: str
) -> None:
    ml_fleet(seed, 1)
    rollout_id = api.call("POST", "/v1/rollouts", {**ROLLOUT, "labels": {"team": "ml"}}).json()["data"]["rollout_id"]
    aws.wait_for_rollouts()

    answer = api.call("POST", f"/v1/rollouts/{rollout_id}/resume", body)

    assert answer.status == 400, answer.body
    error = answer.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert any(e["field"].startswith(field) for e in error["details"]["errors"]), error
    assert api.call("GET", f"/v1/rollouts/{rollout_id}").json()["data"]["attempt"] == 1
    assert len(aws.rollout_executions()) == 1


def test_a_retried_resume_with_its_idempotency_key_answers_the_same_resume(
    api: ApiClient, seed: Seed, aws: LocalAws
) -> None:
    fleet = ml_fleet(seed)
    aws.agent.close_port(fleet[1].instance_ids[0], 8888)
    body = {**ROLLOUT, "docker_updates": {fleet[1].id: "tensorone/pytorch:2.2-cuda12.1"}}
    rollout_id = api.call("POST", "/v1/rollouts", body).json()["data"]["rollout_id"]
    aws.wait_for_rollouts()
    aws.agent.open_port(fleet[1].instance_ids[0], 8888)
    headers = {"Idempotency-Key": "resume-mw-2024-01-22"}
    window = {"maintenance_window": {"id": "mw-2024-01-22", "duration_minutes": 60}}

    first = api.call("POST", f"/v1/rollouts/{rollout_id}/resume", window, headers=headers)
    again = api.call("POST", f"/v1/rollouts/{rollout_id}/resume", window, headers=headers)
    other = api.call("POST", f"/v1/rollouts/{rollout_id}/resume", {}, headers=headers)
    aws.wait_for_rollouts()

    assert (first.status, again.status, other.status) == (202, 200, 409), (again.body, other.body)
    assert again.json()["meta"]["replayed"] is True and again.json()["data"]["attempt"] == 2
    assert other.json()["error"]["code"] == "CONFLICT"
    assert len(aws.rollout_executions()) == 2
    assert [len(restarts_of(aws, c.id)) for c in fleet] == [1, 2]


# ---------------------------------------------------------------- least privilege, measured


# What the SAM policy templates the template uses allow (their documented actions).
SAM_POLICY_ACTIONS = {
    "DynamoDBCrudPolicy": (
        "TableName",
        {
            "dynamodb:GetItem",
            "dynamodb:DeleteItem",
            "dynamodb:PutItem",
            "dynamodb:Scan",
            "dynamodb:Query",
            "dynamodb:UpdateItem",
            "dynamodb:BatchWriteItem",
            "dynamodb:BatchGetItem",
            "dynamodb:DescribeTable",
            "dynamodb:ConditionCheckItem",
        },
    ),
    "DynamoDBReadPolicy": (
        "TableName",
        {"dynamodb:GetItem", "dynamodb:Scan", "dynamodb:Query", "dynamodb:BatchGetItem", "dynamodb:DescribeTable"},
    ),
    "DynamoDBWritePolicy": (
        "TableName",
        {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:BatchWriteItem", "dynamodb:DescribeTable"},
    ),
    "EventBridgePutEventsPolicy": ("EventBusName", {"events:PutEvents"}),
    "SQSSendMessagePolicy": ("QueueName", {"sqs:SendMessage"}),
}
SQS_EVENT_SOURCE_ACTIONS = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}


def _logical_id(reference: Any) -> str | None:
    """`!Ref X`, `!GetAtt X.Arn` / `X.QueueName`: the resource X; a literal or a Sub: None."""
    if isinstance(reference, dict) and "Ref" in reference:
        return str(reference["Ref"])
    if isinstance(reference, dict) and "Fn::GetAtt" in reference:
        target = reference["Fn::GetAtt"]
        return str(target if isinstance(target, str) else ".".join(target)).split(".")[0]
    return None


def _resource_matches(resource: Any, wanted: str) -> bool:
    """`wanted` is a logical id, or `arn-ish:<name>` for resources named by a Sub pattern."""
    if resource == "*":
        return True
    if _logical_id(resource) is not None:
        return _logical_id(resource) == wanted
    pattern = resource.get("Fn::Sub") if isinstance(resource, dict) else resource
    if isinstance(pattern, list):
        pattern = pattern[0]
    regex = re.escape(str(pattern))
    regex = re.sub(r"\\\$\\\{[^}]*\\\}", "[^:]*", regex).replace(r"\*", ".*")
    return re.fullmatch(regex, wanted) is not None


def granted(template: dict[str, Any], function: str, action: str, resource: str) -> bool:
    properties = template["Resources"][function]["Properties"]
    if action in SQS_EVENT_SOURCE_ACTIONS and any(e["Type"] == "SQS" for e in properties.get("Events", {}).values()):
        return True
    for policy in properties.get("Policies", []):
        for name, body in policy.items():
            if name in SAM_POLICY_ACTIONS:
                key, actions = SAM_POLICY_ACTIONS[name]
                if action in actions and _logical_id(body[key]) == resource:
                    return True
            elif name == "Statement":
                for statement in body:
                    actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                    resources = (
                        statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
                    )
                    if action in actions and any(_resource_matches(r, resource) for r in resources):
                        return True
    return False


def _called_resource(aws: LocalAws, service: str, params: dict[str, Any]) -> str:
    """The template resource (logical id) a call touched, or the ARN-ish name it was made on."""
    local = "restarter-local-"
    if service == "events" and params.get("Entries"):
        params = {"EventBusName": params["Entries"][0].get("EventBusName")}
    if service == "sqs" and not str(params.get("QueueUrl", "")).rsplit("/", 1)[-1].startswith(local):
        # a queue named as deployed (the sample events' ARNs): the template queue of that name
        name = str(params.get("QueueUrl", "")).rsplit("/", 1)[-1]
        for logical_id, resource in load_template()["Resources"].items():
            queue_name = resource["Properties"].get("QueueName") if resource["Type"] == "AWS::SQS::Queue" else None
            if queue_name and _resource_matches(queue_name, name):
                return str(logical_id)
    for key in ("TableName", "stateMachineArn", "executionArn", "QueueUrl", "EventBusName"):
        value = str(params.get(key) or "")
        if value:
            if key == "executionArn":  # arn:...:execution:<machine>:<name>
                return value.split(":execution:")[1].split(":")[0].removeprefix(local)
            name = value.rsplit("/", 1)[-1].rsplit(":", 1)[-1]
            return "RestarterEventBus" if name == "restarter-local" else name.removeprefix(local)
    if service == "ssm" and params.get("Name"):
        return f"arn:aws:ssm:us-east-1:123456789012:parameter{params['Name']}"
    if service == "cloudwatch" and params.get("ResourceARN"):
        return str(params["ResourceARN"])
    return "*"


@pytest.fixture
def calls_by_function(aws: LocalAws, monkeypatch: pytest.MonkeyPatch) -> dict[str, set[tuple[str, str]]]:
    """Every AWS call a function's code made while it ran (its Lambda invocations, on any
    thread), as (IAM action, resource) pairs."""
    calls: dict[str, set[tuple[str, str]]] = {}
    current = threading.local()
    invoke, record_call = aws.registry.invoke, aws.agent.record_call

    def invoking(function_name: str, event: Any) -> tuple[Any, bool]:
        current.name = function_name.split(":function:")[-1].split(":")[0]
        try:
            return invoke(function_name, event)
        finally:
            current.name = None

    def recording(service: str, action: str, params: dict[str, Any] | None = None) -> Any:
        name = getattr(current, "name", None)
        if name:
            prefix = "states" if service == "stepfunctions" else service
            calls.setdefault(name, set()).add((f"{prefix}:{action}", _called_resource(aws, service, params or {})))
        return record_call(service, action, params)

    monkeypatch.setattr(aws.registry, "invoke", invoking)
    monkeypatch.setattr(aws.agent, "record_call", recording)
    return calls


def test_given_the_trigger_functions_when_they_run_then_their_template_policies_allow_every_call_they_make(
    api: ApiClient, seed: Seed, aws: LocalAws, calls_by_function: dict[str, set[tuple[str, str]]]
) -> None:
    """ScheduledRolloutFunction once lacked AuditTable although create_rollout audits: each
    trigger function runs its real code here, and every call it made must be allowed."""
    seed(labels={"team": "ml"})  # cluster_abc123
    api.call("POST", "/v1/schedules", WEEKLY)

    # When each trigger delivers its sample events (and the rollouts run their items)
    aws.fire_schedule("weekly-ml-maintenance", "restarter-default")
    aws.wait_for_rollouts()
    aws.registry.invoke("QueueRestartFunction", load_event("sqs_rollout.json"))
    aws.registry.invoke("QueueRestartFunction", load_event("sqs_restart_batch.json"))
    aws.wait_for_rollouts()
    aws.registry.invoke("AlarmRecoveryFunction", load_event("alarm_state_change_cluster_dimension.json"))
    aws.registry.invoke("AlarmRecoveryFunction", load_event("alarm_state_change_instance.json"))  # by tag
    aws.wait_for_executions()

    # Then each made its calls, and template.yaml allows every one of them
    template = load_template()
    trigger_functions = (
        "ScheduledRolloutFunction",
        "QueueRestartFunction",
        "AlarmRecoveryFunction",
        "RolloutStepFunction",
    )
    assert set(trigger_functions) <= set(calls_by_function), sorted(calls_by_function)
    assert ("dynamodb:PutItem", "AuditTable") in calls_by_function["ScheduledRolloutFunction"]
    missing = {
        function: sorted(c for c in calls_by_function[function] if not granted(template, function, *c))
        for function in trigger_functions
    }
    assert missing == {f: [] for f in trigger_functions}
