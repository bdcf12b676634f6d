"""Scheduled maintenance: the schedule rules (Scheduler expressions, time zones, one rollout per
firing, tenant groups), then schedules managed through the API in EventBridge Scheduler (moto)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from restarter.domain.schedules import ScheduleFiring, ScheduleRequest, check_schedule_expression, schedule_group
from restarter_local.engine import LocalAws
from tests.conftest import load_event
from tests.integration.harness import WEEKLY, ApiClient, Seed, ml_fleet

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
