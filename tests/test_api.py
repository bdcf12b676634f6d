"""The Restart Cluster API through the local API Gateway: the seed's curl examples, bounds,
every error code, tenant isolation, idempotent replay, cancel, wait_for_ready, OpenAPI."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
from tests.conftest import REPO, ApiClient, load_event

from restarter.domain.models import Cluster
from restarter.local.engine import LocalAws

Seed = Callable[..., Cluster]
RESTART = "/v1/clusters/cluster_abc123/restart"


def seed_curl_body(event: str) -> dict[str, Any]:
    return dict(load_event(event)["request"])


# ---------------------------------------------------------------- the seed's three curl examples


def test_seed_basic_restart_waits_for_ready_and_answers_the_seed_schema(api: ApiClient, seed: Seed) -> None:
    seed()

    answer = api.call("POST", RESTART, seed_curl_body("start_restart_basic.json"))

    assert answer.status == 200, answer.body
    body = answer.json()
    assert body["success"] is True
    data = body["data"]
    # every field of the seed's response schema
    for field in (
        "id",
        "name",
        "status",
        "restart_initiated_at",
        "estimated_completion_time",
        "restart_type",
        "restart_progress",
        "configuration_updates",
        "cost_impact",
    ):
        assert field in data, field
    assert (data["id"], data["name"], data["restart_type"]) == ("cluster_abc123", "ml-training-cluster", "graceful")
    assert set(data["restart_progress"]) == {"phase", "percentage", "current_step", "steps_completed", "total_steps"}
    assert set(data["configuration_updates"]) == {"pending", "applied"}
    assert set(data["cost_impact"]) == {"old_hourly_rate", "new_hourly_rate", "rate_change_reason"}
    # waited to the end: the cluster runs again and the result is in the answer
    assert data["status"] == "running" and data["restart_status"] == "ready"
    assert data["restart_progress"]["percentage"] == 100
    assert data["downtime_seconds"] > 0 and data["restart_duration_seconds"] >= data["downtime_seconds"]
    assert data["links"]["restart"] == f"/v1/restarts/{data['restart_id']}"
    assert body["meta"]["wait_for_ready"] is True and body["meta"]["completed"] is True
    assert body["meta"]["request_id"]


def test_seed_configuration_update_example_lists_pending_changes_and_cost(
    api: ApiClient, seed: Seed, aws: LocalAws
) -> None:
    seed(instance_type="g6e.4xlarge", instance_count=1)  # 16 vCPUs, 128 GiB, 1x L40S
    body = seed_curl_body("start_restart_config_updates.json")
    body["wait_for_ready"] = False

    answer = api.call("POST", RESTART, body)

    assert answer.status == 200, answer.body
    data = answer.json()["data"]
    assert data["status"] == "restarting"
    assert data["restart_progress"]["phase"] == "stopping_processes"
    assert data["restart_progress"]["steps_completed"] == 2
    assert data["restart_progress"]["total_steps"] == 8
    assert data["restart_progress"]["percentage"] == 25
    pending = data["configuration_updates"]["pending"]
    assert "instance_type: g6e.4xlarge -> g6e.16xlarge" in pending
    assert "memory_gb: 128 -> 512" in pending
    assert "cpu_cores: 16 -> 64" in pending
    assert "docker_image: tensorone/pytorch:2.1-cuda12.1 -> tensorone/pytorch:2.2-cuda12.1" in pending
    assert data["configuration_updates"]["applied"] == []
    cost = data["cost_impact"]
    assert cost["new_hourly_rate"] > cost["old_hourly_rate"] > 0
    assert "upgrade" in cost["rate_change_reason"].lower()
    assert answer.json()["meta"] == {
        "request_id": answer.json()["meta"]["request_id"],
        "wait_for_ready": False,
        "completed": False,
        "waited_seconds": 0.0,
    }
    aws.wait_for_executions()
    final = api.call("GET", f"/v1/restarts/{data['restart_id']}").json()["data"]
    assert final["status"] == "ready"
    assert sorted(final["configuration_changes"]) == sorted(pending)


def test_seed_force_restore_example_restores_snap_xyz789(api: ApiClient, seed: Seed) -> None:
    seed(checkpoints=["snap_xyz789"])

    answer = api.call("POST", RESTART, seed_curl_body("start_restart_force_snapshot.json"))

    assert answer.status == 200, answer.body
    data = answer.json()["data"]
    assert data["restart_type"] == "force" and data["restart_status"] == "ready"
    applied = data["configuration_changes"]
    assert "root_volume: current -> snap_xyz789" in applied
    assert any(line.startswith("port_mapping.tcp/8080: (none) -> ") for line in applied)
    cluster = api.call("GET", "/v1/clusters/cluster_abc123").json()["data"]
    web = next(p for p in cluster["network"]["port_mappings"] if p["internal_port"] == 8080)
    assert web["status"] == "active" and 30000 <= web["external_port"] < 32768
    assert web["url"].endswith(f":{web['external_port']}")


# ---------------------------------------------------------------- reads


def test_get_cluster_answers_what_the_seed_clients_read(api: ApiClient, seed: Seed) -> None:
    seed(checkpoints=["snap_older1", "snap_newer2"])

    answer = api.call("GET", "/v1/clusters/cluster_abc123", key="reader")

    assert answer.status == 200
    cluster = answer.json()["data"]
    assert cluster["status"] == "running" and cluster["name"] == "ml-training-cluster"
    assert cluster["gpuType"] == "A100" and cluster["gpu_count"] == 8
    assert cluster["template_info"]["docker_image"] == "tensorone/pytorch:2.1-cuda12.1"
    assert [s["id"] for s in cluster["storage"]["snapshots"]] == ["snap_older1", "snap_newer2"]
    assert all({"id", "name", "created_at"} <= set(s) for s in cluster["storage"]["snapshots"])
    [jupyter] = cluster["network"]["port_mappings"]
    assert (jupyter["internal_port"], jupyter["status"]) == (8888, "active")
    assert jupyter["url"].startswith("http://") and jupyter["url"].endswith(":30888")
    assert cluster["current_restart"] is None


def test_list_clusters_filters_by_status_and_label(api: ApiClient, seed: Seed) -> None:
    seed()
    seed(id="cluster_prod01", name="inference-prod", labels={"env": "production"}, instance_count=1)
    seed(id="cluster_err01", name="broken", status="error", instance_count=1)

    everything = api.call("GET", "/v1/clusters").json()["data"]
    errored = api.call("GET", "/v1/clusters", query={"status": ["error"]}).json()["data"]
    production = api.call("GET", "/v1/clusters", query={"label": ["env=production"]}).json()["data"]

    assert [c["id"] for c in everything] == ["cluster_abc123", "cluster_err01", "cluster_prod01"]
    assert [c["id"] for c in errored] == ["cluster_err01"]
    assert [c["id"] for c in production] == ["cluster_prod01"]


def test_restart_history_is_newest_first_and_paginated(api: ApiClient, seed: Seed, aws: LocalAws) -> None:
    seed()
    ids = [api.call("POST", RESTART, {"wait_for_ready": True}).json()["data"]["restart_id"] for _ in range(3)]

    first = api.call("GET", "/v1/clusters/cluster_abc123/restarts", query={"limit": ["2"]}).json()["data"]
    second = api.call(
        "GET", "/v1/clusters/cluster_abc123/restarts", query={"limit": ["2"], "next_token": [first["next_token"]]}
    ).json()["data"]

    assert [r["id"] for r in first["restarts"] + second["restarts"]] == list(reversed(ids))
    assert second["next_token"] is None
    restart = api.call("GET", f"/v1/restarts/{ids[0]}").json()["data"]
    assert [p["phase"] for p in restart["phase_history"]] == [
        "stopping_processes",
        "rebooting",
        "starting_services",
        "health_checks",
        "ready",
    ]
    assert restart["restart_completed_at"] and restart["downtime_seconds"] > 0


# ---------------------------------------------------------------- bounds and error codes


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"grace_period_minutes": 31}, "grace_period_minutes"),
        ({"grace_period_minutes": -1}, "grace_period_minutes"),
        ({"timeout_minutes": 0}, "timeout_minutes"),
        ({"timeout_minutes": 61}, "timeout_minutes"),
        ({"force": "true"}, "force"),
        ({"wait_for_ready": 1}, "wait_for_ready"),
        ({"preserve_state": "yes"}, "preserve_state"),
        ({"apply_system_updates": None}, "apply_system_updates"),
        ({"update_configuration": {"gpu_count": 0}}, "update_configuration.gpu_count"),
        ({"environment_updates": {"bad name": "x"}}, "environment_updates.bad name.[key]"),
        ({"port_mapping_updates": [{"internal_port": 65536}]}, "port_mapping_updates[0].internal_port"),
        ({"restart_reason": "x" * 501}, "restart_reason"),
        ({"restore_from_snapshot": "../../etc"}, "restore_from_snapshot"),
        ({"update_docker_image": "UPPER/Case"}, "update_docker_image"),
        ({"unknown_field": True}, "unknown_field"),
    ],
)
def test_out_of_bounds_fields_are_400_naming_the_field(
    api: ApiClient, seed: Seed, aws: LocalAws, body: dict[str, Any], field: str
) -> None:
    seed()
    answer = api.call("POST", RESTART, body)
    assert answer.status == 400
    error = answer.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert field in [e["field"] for e in error["details"]["errors"]]
    assert aws.executions() == []


def test_invalid_state_is_409_with_the_seeds_details(api: ApiClient, seed: Seed, aws: LocalAws) -> None:
    seed()
    aws.agent.set_never_healthy(aws.deps.clusters.get("cluster_abc123").instance_ids[0])  # type: ignore[union-attr]
    first = api.call("POST", RESTART, {"timeout_minutes": 5}).json()["data"]

    answer = api.call("POST", RESTART, {})

    assert answer.status == 409
    assert answer.json()["error"]["code"] == "INVALID_STATE"
    assert answer.json()["error"]["message"] == "Cluster cannot be restarted in current state"
    details = answer.json()["error"]["details"]
    assert details["current_status"] == "restarting"
    assert details["allowed_states"] == ["running", "stopped", "error"]
    assert details["suggestion"]
    assert details["restart_id"] == first["restart_id"]


def test_missing_cluster_and_another_tenants_cluster_are_the_same_404(api: ApiClient, seed: Seed) -> None:
    seed()
    missing = api.call("GET", "/v1/clusters/cluster_nope", key="other")
    foreign = api.call("GET", "/v1/clusters/cluster_abc123", key="other")
    foreign_restart = api.call("POST", RESTART, {}, key="other")

    assert missing.status == foreign.status == foreign_restart.status == 404
    assert foreign.json()["error"]["code"] == missing.json()["error"]["code"] == "NOT_FOUND"
    assert foreign.json()["error"]["message"] == missing.json()["error"]["message"]
    assert api.call("GET", "/v1/clusters", key="other").json()["data"] == []


def test_another_tenant_cannot_read_or_cancel_a_restart(api: ApiClient, seed: Seed) -> None:
    seed()
    restart_id = api.call("POST", RESTART, {"wait_for_ready": True}).json()["data"]["restart_id"]
    assert api.call("GET", f"/v1/restarts/{restart_id}", key="other").status == 404
    assert api.call("POST", f"/v1/restarts/{restart_id}/cancel", key="other").status == 404
    assert api.call("GET", "/v1/clusters/cluster_abc123/restarts", key="other").status == 404


@pytest.mark.parametrize(
    "authorization", [None, "Bearer rk_00000000_notarealkeynotarealkeynotarealkey12345", "Basic abc"]
)
def test_missing_or_bad_key_is_401_in_the_envelope(api: ApiClient, seed: Seed, authorization: str | None) -> None:
    seed()
    headers = {"Authorization": authorization} if authorization else {}
    answer = api.call("POST", RESTART, {}, key=None, headers=headers)
    assert answer.status == 401
    assert answer.json() == {
        "success": False,
        "error": {"code": "UNAUTHORIZED", "message": "Missing or invalid API key", "details": {}},
    }


def test_a_read_only_key_cannot_restart(api: ApiClient, seed: Seed, aws: LocalAws) -> None:
    seed()
    answer = api.call("POST", RESTART, {}, key="reader")
    assert answer.status == 403
    assert answer.json()["error"]["code"] == "FORBIDDEN"
    assert aws.executions() == []
    assert aws.deps is not None
    [refusal] = aws.deps.audit.entries("cluster_abc123")
    assert (refusal["outcome"], refusal["details"]["error_code"]) == ("refused", "FORBIDDEN")


def test_too_many_requests_is_429_rate_limited(aws: LocalAws, seed: Seed, api: ApiClient) -> None:
    from restarter.local.gateway import LocalApiGateway

    seed()
    limited = ApiClient(LocalApiGateway(aws, rate_limit=0.001, burst=2), api.keys)
    statuses = [limited.call("GET", "/v1/clusters/cluster_abc123").status for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert limited.call("GET", "/v1/clusters/cluster_abc123").json()["error"]["code"] == "RATE_LIMITED"


def test_an_unexpected_failure_is_500_internal_without_a_traceback(
    api: ApiClient, seed: Seed, monkeypatch: pytest.MonkeyPatch
) -> None:
    from restarter.services import restart_api

    seed()

    def explode(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("database password is hunter2")

    monkeypatch.setattr(restart_api, "get_cluster", explode)
    answer = api.call("GET", "/v1/clusters/cluster_abc123")
    assert answer.status == 500
    assert answer.json() == {
        "success": False,
        "error": {"code": "INTERNAL", "message": "Internal error", "details": {}},
    }
    assert "hunter2" not in answer.body and "Traceback" not in answer.body


@pytest.mark.parametrize(
    ("method", "path", "raw", "headers", "status"),
    [
        ("POST", RESTART, "{not json", {}, 400),
        ("POST", RESTART, "[1, 2]", {}, 400),
        ("POST", RESTART, "force=true", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
        ("POST", RESTART, json.dumps({"restart_reason": "x" * 70000}), {}, 413),
        ("GET", "/v1/no/such/thing", None, {}, 404),
        ("DELETE", "/v1/clusters/cluster_abc123", None, {}, 405),
        ("GET", "/v1/restarts/not-a-restart-id", None, {}, 400),
    ],
)
def test_bad_requests_are_4xx_in_the_envelope(
    api: ApiClient, seed: Seed, method: str, path: str, raw: str | None, headers: dict[str, str], status: int
) -> None:
    seed()
    answer = api.call(method, path, raw=raw, headers=headers)
    assert answer.status == status, answer.body
    body = answer.json()
    assert body["success"] is False
    assert set(body["error"]) == {"code", "message", "details"}
    assert "Traceback" not in answer.body


# ---------------------------------------------------------------- idempotency


def test_same_idempotency_key_and_body_replays_the_answer_without_a_second_restart(
    api: ApiClient, seed: Seed, aws: LocalAws
) -> None:
    seed()
    headers = {"Idempotency-Key": "maint-2024-01-15-cluster_abc123"}

    first = api.call("POST", RESTART, {"restart_reason": "nightly"}, headers=headers)
    replay = api.call("POST", RESTART, {"restart_reason": "nightly"}, headers=headers)

    assert first.status == replay.status == 200
    assert replay.json()["data"]["restart_id"] == first.json()["data"]["restart_id"]
    assert len(aws.executions()) == 1


def test_same_idempotency_key_with_another_body_is_409_conflict(api: ApiClient, seed: Seed, aws: LocalAws) -> None:
    seed()
    headers = {"Idempotency-Key": "k-1"}
    api.call("POST", RESTART, {"restart_reason": "one"}, headers=headers)

    answer = api.call("POST", RESTART, {"restart_reason": "two"}, headers=headers)

    assert answer.status == 409
    assert answer.json()["error"]["code"] == "CONFLICT"
    assert len(aws.executions()) == 1


# ---------------------------------------------------------------- cancel and wait_for_ready


def test_cancel_stops_the_restart_cleans_up_and_releases_the_lock(api: ApiClient, seed: Seed, aws: LocalAws) -> None:
    cluster = seed()
    aws.agent.set_never_healthy(cluster.instance_ids[0])  # the restart waits in starting_services
    restart_id = api.call("POST", RESTART, {"timeout_minutes": 60}).json()["data"]["restart_id"]

    answer = api.call("POST", f"/v1/restarts/{restart_id}/cancel")
    assert answer.status == 202
    assert answer.json()["data"]["cancel_requested_at"]
    aws.agent.clear_never_healthy(cluster.instance_ids[0])
    aws.wait_for_executions()

    restart = api.call("GET", f"/v1/restarts/{restart_id}").json()["data"]
    assert restart["status"] == "cancelled"
    assert restart["error"]["code"] == "CANCELLED"
    assert aws.deps is not None and aws.deps.locks.holder(cluster.id) is None
    assert api.call("GET", "/v1/clusters/cluster_abc123").json()["data"]["status"] == "running"
    again = api.call("POST", f"/v1/restarts/{restart_id}/cancel")
    assert again.status == 409 and again.json()["error"]["code"] == "INVALID_STATE"


def test_cancel_that_races_a_step_write_still_lands(
    api: ApiClient, seed: Seed, aws: LocalAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given the execution writes the record between the cancel's read and its write."""
    cluster = seed()
    aws.agent.set_never_healthy(cluster.instance_ids[0])
    restart_id = api.call("POST", RESTART, {"timeout_minutes": 60}).json()["data"]["restart_id"]
    assert aws.deps is not None
    store = aws.deps.restarts
    read = store.get
    raced: list[int] = []
    api_thread = threading.current_thread()

    def read_then_lose_the_race(record_id: str) -> Any:
        stale = read(record_id)
        if stale is not None and not raced and threading.current_thread() is api_thread:
            fresh = read(record_id)
            assert fresh is not None
            raced.append(store.put(fresh[0], fresh[1]))  # a step's write lands first
        return stale

    monkeypatch.setattr(store, "get", read_then_lose_the_race)

    # When the user cancels
    answer = api.call("POST", f"/v1/restarts/{restart_id}/cancel")

    # Then the cancel is accepted, not a 409, and the execution ends cancelled
    assert raced, "the race was not staged"
    assert answer.status == 202, answer.body
    monkeypatch.undo()
    aws.agent.clear_never_healthy(cluster.instance_ids[0])
    aws.wait_for_executions()
    assert api.call("GET", f"/v1/restarts/{restart_id}").json()["data"]["status"] == "cancelled"


def test_wait_for_ready_gives_up_at_the_wait_budget_and_says_so(api: ApiClient, seed: Seed, aws: LocalAws) -> None:
    cluster = seed()
    assert aws.deps is not None
    aws.deps.settings = aws.deps.settings.model_copy(update={"api_wait_budget_seconds": 0.3})
    aws.agent.set_never_healthy(cluster.instance_ids[0])

    answer = api.call("POST", RESTART, {"wait_for_ready": True, "timeout_minutes": 60})

    assert answer.status == 200
    body = answer.json()
    assert body["meta"]["wait_for_ready"] is True
    assert body["meta"]["completed"] is False
    assert body["meta"]["waited_seconds"] >= 0.3
    assert body["data"]["restart_status"] == "restarting"
    aws.agent.clear_never_healthy(cluster.instance_ids[0])


def test_wait_for_ready_on_a_failed_restart_answers_the_failure(api: ApiClient, seed: Seed, aws: LocalAws) -> None:
    cluster = seed()
    aws.agent.close_port(cluster.instance_ids[0], 8888)

    answer = api.call("POST", RESTART, {"wait_for_ready": True, "update_docker_image": "tensorone/pytorch:2.3"})

    assert answer.status == 502
    error = answer.json()["error"]
    assert error["code"] == "RESTART_FAILED"
    assert error["details"]["status"] == "rolled_back"
    assert error["details"]["phase"] == "health_checks"
    assert answer.json()["meta"]["completed"] is True


# ---------------------------------------------------------------- audit and secrets


def test_every_request_is_audited_with_secrets_redacted(api: ApiClient, seed: Seed, aws: LocalAws) -> None:
    seed()
    api.call("POST", RESTART, {"environment_updates": {"WANDB_API_KEY": "wb_top_secret"}, "restart_reason": "rotate"})
    api.call("POST", RESTART, {"timeout_minutes": 99, "environment_updates": {"X": "also_secret"}})
    aws.wait_for_executions()

    assert aws.deps is not None
    entries = aws.deps.audit.entries("cluster_abc123")
    outcomes = [(e["action"], e["outcome"]) for e in entries]
    assert ("restart.requested", "accepted") in outcomes
    assert ("restart.requested", "refused") in outcomes
    assert all(e["actor"].startswith("default/") for e in entries if e["action"] == "restart.requested")
    accepted = next(e for e in entries if e["outcome"] == "accepted")
    assert accepted["details"]["reason"] == "rotate"
    assert "environment.WANDB_API_KEY: (unset) -> <redacted>" in accepted["details"]["changes"]
    dumped = json.dumps(entries)
    assert "wb_top_secret" not in dumped and "also_secret" not in dumped


# ---------------------------------------------------------------- OpenAPI


def test_the_committed_openapi_document_matches_the_code() -> None:
    from restarter.handlers.api import openapi_document

    committed = json.loads((REPO / "docs" / "openapi.json").read_text())
    assert committed == json.loads(openapi_document()), "run scripts/export_openapi.py and commit docs/openapi.json"


def test_openapi_and_swagger_ui_are_served_without_a_key(api: ApiClient) -> None:
    spec = api.call("GET", "/v1/openapi.json", key=None)
    assert spec.status == 200
    paths = spec.json()["paths"]
    assert "/v1/clusters/{cluster_id}/restart" in paths
    assert "/v1/restarts/{restart_id}/cancel" in paths
    docs = api.call("GET", "/v1/docs", key=None)
    assert docs.status == 200 and "swagger" in docs.body.lower()


def test_the_api_function_answers_the_sample_proxy_events(aws: LocalAws, seed: Seed) -> None:
    from restarter.handlers.api import lambda_handler
    from restarter.local.engine import LocalLambdaContext

    seed()
    context = LocalLambdaContext("ApiFunction")

    restarted = lambda_handler(load_event("api_restart_basic.json"), context)
    cluster = lambda_handler(load_event("api_get_cluster.json"), context)

    assert restarted["statusCode"] == 200
    assert json.loads(restarted["body"])["data"]["restart_status"] == "ready"
    assert cluster["statusCode"] == 200
    assert json.loads(cluster["body"])["data"]["name"] == "ml-training-cluster"
