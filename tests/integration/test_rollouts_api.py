"""Rollouts through the API: the tenant's matching clusters restarted, other tenants' clusters not
found, retried requests and resumes answered by their idempotency key, invalid rollouts and
windows refused, a failed start fired again runs once, a resume in a later window runs the rest."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from restarter_local.engine import LocalAws
from tests.integration.harness import WEEKLY, ApiClient, Seed, explain_restarts, ml_fleet, restarts_of

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
