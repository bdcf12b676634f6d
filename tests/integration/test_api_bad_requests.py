"""The Restart Cluster API through the local API Gateway: the seed's curl examples, bounds,
every error code, tenant isolation, idempotent replay, cancel, wait_for_ready, OpenAPI."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from restarter.domain.models import Cluster
from restarter_local.engine import LocalAws
from tests.conftest import REPO, load_event
from tests.integration.harness import ApiClient

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
        "warnings": [],
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
        ({"update_configuration": {"cpu_cores": 0}}, "update_configuration.cpu_cores"),
        ({"update_configuration": {"cpu_cores": 449}}, "update_configuration.cpu_cores"),
        ({"update_configuration": {"cpu_cores": "64"}}, "update_configuration.cpu_cores"),
        ({"update_configuration": {"memory_gb": 0}}, "update_configuration.memory_gb"),
        ({"update_configuration": {"memory_gb": 24577}}, "update_configuration.memory_gb"),
        ({"update_configuration": {"storage_gb": 0}}, "update_configuration.storage_gb"),
        ({"update_configuration": {"storage_gb": 65537}}, "update_configuration.storage_gb"),
        ({"update_configuration": {"region": "mars-north-1"}}, "update_configuration.region"),
        ({"update_configuration": {"region": "US-WEST-2"}}, "update_configuration.region"),
        (
            {"port_mapping_updates": [{"internal_port": 8080, "external_port": 65536}]},
            "port_mapping_updates[0].external_port",
        ),
        (
            {"port_mapping_updates": [{"internal_port": 8080, "external_port": -1}]},
            "port_mapping_updates[0].external_port",
        ),
        ({"port_mapping_updates": [{"internal_port": 8080, "protocol": "icmp"}]}, "port_mapping_updates[0].protocol"),
        ({"port_mapping_updates": [{"internal_port": 8080, "protocol": "TCP"}]}, "port_mapping_updates[0].protocol"),
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
    first = api.call("POST", RESTART, {"timeout_minutes": 10}).json()["data"]

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
    from restarter_local.gateway import LocalApiGateway

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


def test_the_boundary_values_grace_30_and_timeout_60_are_accepted(api: ApiClient, seed: Seed, aws: LocalAws) -> None:
    seed()

    answer = api.call("POST", RESTART, {"grace_period_minutes": 30, "timeout_minutes": 60})

    assert answer.status == 200, answer.body
    assert len(aws.executions()) == 1
    stored = aws.deps.restarts.get(answer.json()["data"]["restart_id"])  # type: ignore[union-attr]
    assert stored is not None
    assert (stored[0].request["grace_period_minutes"], stored[0].request["timeout_minutes"]) == (30, 60)


@pytest.mark.parametrize("content_type", ["APPLICATION/JSON", "Application/Json; Charset=UTF-8"])
def test_a_json_content_type_in_any_case_is_json(api: ApiClient, seed: Seed, content_type: str) -> None:
    """Given a media type in capitals (media types are case-insensitive), then it is read as JSON, not a 500."""
    seed()

    answer = api.call("POST", RESTART, {"restart_reason": "caps"}, headers={"Content-Type": content_type})

    assert answer.status == 200, answer.body
    assert answer.json()["data"]["restart_status"] == "restarting"


@pytest.mark.parametrize("path", [RESTART, "/v1/rollouts"])
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "TEXT/PLAIN"])
def test_a_post_with_another_content_type_and_an_empty_body_is_415(
    api: ApiClient, seed: Seed, aws: LocalAws, path: str, content_type: str
) -> None:
    """Given a route that reads a JSON body, when the body is empty but says it is not JSON, then
    it is refused 415 like a non-empty one (never a 500, never read as `{}`)."""
    seed()

    answer = api.call("POST", path, raw="", headers={"Content-Type": content_type})

    assert answer.status == 415, answer.body
    assert answer.json()["success"] is False
    assert answer.json()["error"]["code"] == "VALIDATION_ERROR"
    assert aws.executions() == []


def test_an_empty_body_without_a_content_type_is_an_empty_request(api: ApiClient, seed: Seed) -> None:
    """`curl -X POST` sends neither: the restart uses every default; a bodiless route ignores a content type."""
    seed()
    token = f"Bearer {api.keys['admin']}"

    restart = api.gateway.handle("POST", RESTART, headers={"Authorization": token}, body=None)
    cancel = api.gateway.handle(
        "POST", "/v1/restarts/rst_nosuchrestart/cancel", headers={"Authorization": token, "Content-Type": "text/plain"}
    )

    assert restart.status == 200, restart.body
    assert restart.json()["data"]["restart_type"] == "graceful"
    assert cancel.status == 404, cancel.body


@pytest.mark.parametrize("raw", ["[" * 30000, '{"update_configuration": ' + "[" * 30000, '{"a":' * 12000])
def test_json_nested_deeper_than_the_parser_goes_is_400(api: ApiClient, seed: Seed, aws: LocalAws, raw: str) -> None:
    seed()

    answer = api.call("POST", RESTART, raw=raw)

    assert answer.status == 400, answer.body
    error = answer.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"]["errors"][0]["field"] == "body"
    assert aws.executions() == []


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"grace_period_minutes": ' + "9" * 5000 + "}", "grace_period_minutes"),
        ('{"timeout_minutes": -' + "1" * 5000 + "}", "timeout_minutes"),
        ('{"port_mapping_updates": [{"internal_port": ' + "8" * 5000 + "}]}", "port_mapping_updates[0].internal_port"),
    ],
)
def test_an_integer_with_thousands_of_digits_is_400_naming_the_field(
    api: ApiClient, seed: Seed, aws: LocalAws, raw: str, field: str
) -> None:
    seed()

    answer = api.call("POST", RESTART, raw=raw)

    assert answer.status == 400, answer.body
    error = answer.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert [e["field"] for e in error["details"]["errors"]] == [field]
    assert "999" not in answer.body
    assert aws.executions() == []


def _token(key: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


GOOD_KEY = {
    "cluster_id": {"S": "cluster_abc123"},
    "restart_id": {"S": "rst_0123456789abcdef"},
    "restart_initiated_at": {"S": "2024-01-15T17:00:00Z"},
}


@pytest.mark.parametrize(
    "token",
    [
        "not a token",
        "%%%%",
        "AAAA" * 3,
        _token([1, 2]),
        _token({}),
        _token({**GOOD_KEY, "extra": {"S": "x"}}),
        _token({k: v for k, v in GOOD_KEY.items() if k != "restart_id"}),
        _token({**GOOD_KEY, "cluster_id": {"S": "cluster_someone_else"}}),
        _token({**GOOD_KEY, "restart_id": {"N": "1"}}),
        _token({**GOOD_KEY, "restart_id": {"S": "rst_x", "N": "1"}}),
        _token({**GOOD_KEY, "restart_id": {"S": 7}}),
        _token({**GOOD_KEY, "restart_initiated_at": {"S": "yesterday"}}),
        _token({**GOOD_KEY, "restart_id": {"S": "../../etc"}}),
        base64.urlsafe_b64encode(b"[" * 1500).decode(),
    ],
)
def test_a_forged_or_garbled_next_token_is_400_naming_it(api: ApiClient, seed: Seed, token: str) -> None:
    seed()

    answer = api.call("GET", "/v1/clusters/cluster_abc123/restarts", query={"next_token": [token]})

    assert answer.status == 400, answer.body
    error = answer.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert [e["field"] for e in error["details"]["errors"]] == ["next_token"]


def test_a_next_token_of_another_clusters_history_is_400(api: ApiClient, seed: Seed, aws: LocalAws) -> None:
    """Given a genuine token from one of the tenant's clusters, when it is used on another, then 400."""
    seed()
    seed(id="cluster_two", name="second", instance_count=1)
    for _ in range(2):
        api.call("POST", RESTART, {"wait_for_ready": True})
    token = api.call("GET", "/v1/clusters/cluster_abc123/restarts", query={"limit": ["1"]}).json()["data"]["next_token"]
    assert token

    answer = api.call("GET", "/v1/clusters/cluster_two/restarts", query={"next_token": [token]})

    assert answer.status == 400, answer.body
    assert answer.json()["error"]["details"]["errors"][0]["field"] == "next_token"


# ---------------------------------------------------------------- dependencies failing


def _raise_translated(code: str, message: str) -> Callable[..., Any]:
    from botocore.exceptions import ClientError

    from restarter.adapters.aws_errors import translated

    def fail(*args: Any, **kwargs: Any) -> Any:
        with translated("ec2:DescribeInstances"):
            raise ClientError({"Error": {"Code": code, "Message": message}}, "DescribeInstances")

    return fail


def test_a_throttled_dependency_is_503_internal_with_retry_after(
    api: ApiClient, seed: Seed, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Given EC2 throttling, then the answer is 503 INTERNAL with Retry-After and a generic
    message; what AWS said is in the log, not in the answer."""
    from restarter.services import restart_api

    seed()
    monkeypatch.setattr(
        restart_api, "get_cluster", _raise_translated("RequestLimitExceeded", "Request limit exceeded.")
    )

    answer = api.call("GET", "/v1/clusters/cluster_abc123")

    assert answer.status == 503
    assert answer.headers["Retry-After"] == "5"
    assert answer.json() == {
        "success": False,
        "error": {"code": "INTERNAL", "message": "A dependency is busy, retry", "details": {"retry_after_seconds": 5}},
    }
    assert "RequestLimitExceeded" not in answer.body and "ec2:" not in answer.body
    [logged] = [r for r in caplog.records if r.getMessage() == "dependency busy"]
    assert logged.__dict__["dependency"] == {
        "operation": "ec2:DescribeInstances",
        "aws_error_code": "RequestLimitExceeded",
    }


def test_a_failed_dependency_is_502_internal_without_the_aws_text(
    api: ApiClient, seed: Seed, monkeypatch: pytest.MonkeyPatch
) -> None:
    from restarter.services import restart_api

    seed()
    secret_detail = "User: arn:aws:sts::123456789012:assumed-role/x is not authorized to perform ec2:DescribeInstances"
    monkeypatch.setattr(restart_api, "get_cluster", _raise_translated("UnauthorizedOperation", secret_detail))

    answer = api.call("GET", "/v1/clusters/cluster_abc123")

    assert answer.status == 502
    assert answer.json() == {
        "success": False,
        "error": {"code": "INTERNAL", "message": "A dependency failed", "details": {}},
    }
    assert "arn:aws" not in answer.body and "UnauthorizedOperation" not in answer.body


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


@pytest.mark.parametrize("path", [RESTART, "/v1/rollouts"])
@pytest.mark.parametrize("key", ["k" * 201, "", "   ", "two words", "tab\there", "nul\x01byte", "clé"])
def test_an_idempotency_key_that_is_too_long_or_not_printable_is_400_naming_the_header(
    api: ApiClient, seed: Seed, aws: LocalAws, path: str, key: str
) -> None:
    seed()
    body = (
        {"restart_reason": "x"}
        if path == RESTART
        else {"maintenance_window": {"id": "mw-1"}, "cluster_ids": ["cluster_abc123"]}
    )

    answer = api.call("POST", path, body, headers={"Idempotency-Key": key})

    assert answer.status == 400, answer.body
    error = answer.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert [e["field"] for e in error["details"]["errors"]] == ["Idempotency-Key"]
    assert aws.executions() == []


def test_two_long_keys_that_share_a_prefix_never_answer_each_other(api: ApiClient, seed: Seed, aws: LocalAws) -> None:
    """Given keys longer than the limit that differ only past character 200, then both are
    refused (they were cut to the same key and the second answered the first's restart); a key
    of exactly 200 characters still replays."""
    seed()
    prefix = "maint-" + "x" * 194
    first = api.call("POST", RESTART, {"restart_reason": "a"}, headers={"Idempotency-Key": prefix + "-a"})
    second = api.call("POST", RESTART, {"restart_reason": "a"}, headers={"Idempotency-Key": prefix + "-b"})
    assert first.status == second.status == 400
    assert aws.executions() == []

    accepted = api.call("POST", RESTART, {"restart_reason": "a"}, headers={"Idempotency-Key": prefix})
    replay = api.call("POST", RESTART, {"restart_reason": "a"}, headers={"Idempotency-Key": prefix})

    assert len(prefix) == 200
    assert accepted.status == replay.status == 200, replay.body
    assert replay.json()["data"]["restart_id"] == accepted.json()["data"]["restart_id"]
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


def test_every_mutation_and_every_refusal_is_in_the_tenants_trail(api: ApiClient, seed: Seed, aws: LocalAws) -> None:
    """Given a mix of requests, then the tenant's trail holds each mutation (accepted or refused)
    and each refusal of any request, with requester, tenant, method, path, outcome and status;
    reads that succeed are not written; no secret is."""
    seed()
    assert aws.deps is not None
    restart_id = api.call(
        "POST", RESTART, {"wait_for_ready": True, "environment_updates": {"WANDB_API_KEY": "wb_top_secret"}}
    ).json()["data"]["restart_id"]
    calls = [
        ("POST", f"/v1/restarts/{restart_id}/cancel", None, {}, 409),  # already ended
        ("POST", RESTART, "force=true", {"Content-Type": "text/plain"}, 415),
        ("POST", RESTART, json.dumps({"restart_reason": "x" * 70000}), {}, 413),
        ("GET", "/v1/clusters/cluster_nope", None, {}, 404),
        ("DELETE", "/v1/clusters/cluster_abc123", None, {}, 405),
        ("GET", "/v1/clusters/cluster_abc123", None, {}, 200),  # a read that succeeds: not written
    ]
    for method, path, raw, headers, status in calls:
        assert api.call(method, path, raw=raw, headers=headers).status == status, (method, path)
    assert api.call("POST", RESTART, {}, key="reader").status == 403

    trail = aws.deps.audit.entries("tenant:default")

    seen = [(e["details"]["method"], e["details"]["path"], e["details"]["status"], e["outcome"]) for e in trail]
    assert sorted(seen) == sorted(
        [
            ("POST", RESTART, 200, "accepted"),
            ("POST", f"/v1/restarts/{restart_id}/cancel", 409, "refused"),
            ("POST", RESTART, 415, "refused"),
            ("POST", RESTART, 413, "refused"),
            ("GET", "/v1/clusters/cluster_nope", 404, "refused"),
            ("DELETE", "/v1/clusters/cluster_abc123", 405, "refused"),
            ("POST", RESTART, 403, "refused"),
        ]
    )
    assert all(e["action"] == "api.request" and e["details"]["tenant_id"] == "default" for e in trail)
    assert all(e["actor"].startswith("default/") for e in trail)
    codes = {e["details"]["status"]: e["details"]["error_code"] for e in trail}
    assert codes[409] == "INVALID_STATE" and codes[415] == "VALIDATION_ERROR" and codes[405] == "METHOD_NOT_ALLOWED"
    dumped = json.dumps(trail)
    assert "wb_top_secret" not in dumped and "Bearer" not in dumped and api.keys["admin"] not in dumped
    # the refused cancel is in the cluster's trail too
    refused_cancel = [
        e
        for e in aws.deps.audit.entries("cluster_abc123")
        if (e["action"], e["outcome"]) == ("restart.cancel_requested", "refused")
    ]
    assert [e["details"]["restart_id"] for e in refused_cancel] == [restart_id]


def test_another_tenants_probes_stay_out_of_the_clusters_trail(api: ApiClient, seed: Seed, aws: LocalAws) -> None:
    """Given tenant globex probing tenant default's cluster, then default's cluster trail shows
    nothing of it, and globex's own trail shows every probe."""
    seed()
    assert aws.deps is not None
    probes = [
        ("POST", RESTART, {}, 404),
        ("POST", RESTART, {"timeout_minutes": 99}, 400),
        ("GET", "/v1/clusters/cluster_abc123", None, 404),
        ("GET", "/v1/clusters/cluster_abc123/restarts", None, 404),
    ]
    for method, path, body, status in probes:
        assert api.call(method, path, body, key="other").status == status, (method, path)

    assert aws.deps.audit.entries("cluster_abc123") == []
    assert aws.deps.audit.entries("tenant:default") == []
    theirs = aws.deps.audit.entries("tenant:globex")
    assert sorted((e["details"]["method"], e["details"]["status"]) for e in theirs) == sorted(
        (method, status) for method, _, _, status in probes
    )
    assert all(e["outcome"] == "refused" and e["actor"].startswith("globex/") for e in theirs)


# ---------------------------------------------------------------- OpenAPI


def test_the_committed_openapi_document_matches_the_code() -> None:
    from restarter.handlers.api.app import openapi_document

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


def test_the_openapi_document_shows_the_errors_the_api_really_answers(api: ApiClient) -> None:
    """Given the served document, then no operation documents Powertools' 422 (the API answers
    400 VALIDATION_ERROR), every error answer is the envelope, POSTs that honour an
    Idempotency-Key document it, and the bearer scheme lets Swagger UI send the key."""
    spec = api.call("GET", "/v1/openapi.json", key=None).json()

    operations = {(path, method): op for path, item in spec["paths"].items() for method, op in item.items()}
    for (path, method), operation in operations.items():
        statuses = set(operation["responses"])
        assert "422" not in statuses, (path, method)
        assert {"400", "401", "403", "404", "405", "429", "500", "502", "503"} <= statuses, (path, method)
        for status, answer in operation["responses"].items():
            if int(status) >= 400:
                assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorEnvelope"}
        assert "Retry-After" in operation["responses"]["503"]["headers"]
    for body_route in [
        ("/v1/clusters/{cluster_id}/restart", "post"),
        ("/v1/rollouts", "post"),
        ("/v1/schedules", "post"),
    ]:
        assert {"409", "413", "415"} <= set(operations[body_route]["responses"]), body_route
    assert "409" not in operations[("/v1/clusters/{cluster_id}", "get")]["responses"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for route in [("/v1/clusters/{cluster_id}/restart", "post"), ("/v1/rollouts", "post")]:
        [header] = [p for p in operations[route]["parameters"] if p["in"] == "header"]
        assert header["name"].lower() == "idempotency-key" and header["required"] is False
        assert header["schema"]["anyOf"][0]["maxLength"] == 200
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "API key",
    }
    assert spec["security"] == [{"bearerAuth": []}]

    docs = api.call("GET", "/v1/docs", key=None).body
    assert "bearerAuth" in docs and "persistAuthorization: true" in docs
    assert "HTTPValidationError" not in docs


def test_the_api_function_answers_the_sample_proxy_events(aws: LocalAws, seed: Seed) -> None:
    from restarter.handlers.api.app import lambda_handler
    from restarter_local.lambdas import LocalLambdaContext

    seed()
    context = LocalLambdaContext("ApiFunction")

    restarted = lambda_handler(load_event("api_restart_basic.json"), context)
    cluster = lambda_handler(load_event("api_get_cluster.json"), context)

    assert restarted["statusCode"] == 200
    assert json.loads(restarted["body"])["data"]["restart_status"] == "ready"
    assert cluster["statusCode"] == 200
    assert json.loads(cluster["body"])["data"]["name"] == "ml-training-cluster"


def test_the_api_function_answers_the_seeds_configuration_update_proxy_event(aws: LocalAws, seed: Seed) -> None:
    """Given the seed's cluster (a p4d.24xlarge: 96 vCPUs, 1152 GiB), when the seed's second curl
    example arrives as a proxy event, then the restart runs, and the answer says that the CPU and
    memory minimums are already met and the instance type stays (instead of silently nothing)."""
    from restarter.handlers.api.app import lambda_handler
    from restarter_local.lambdas import LocalLambdaContext

    seed()

    answer = lambda_handler(load_event("api_restart_config_updates.json"), LocalLambdaContext("ApiFunction"))

    assert answer["statusCode"] == 200, answer["body"]
    body = json.loads(answer["body"])
    data = body["data"]
    assert data["restart_status"] == "ready"
    assert not any(
        line.startswith(("instance_type:", "cpu_cores:", "memory_gb:")) for line in data["configuration_changes"]
    )
    assert (
        "docker_image: tensorone/pytorch:2.1-cuda12.1 -> tensorone/pytorch:2.2-cuda12.1"
        in data["configuration_changes"]
    )
    [warning] = body["meta"]["warnings"]
    assert "p4d.24xlarge" in warning and "instance type unchanged" in warning
    assert "cpu_cores 64 (has 96)" in warning and "memory_gb 512 (has 1152)" in warning


def test_the_api_function_answers_the_seeds_snapshot_restore_proxy_event(aws: LocalAws, seed: Seed) -> None:
    from restarter.handlers.api.app import lambda_handler
    from restarter_local.lambdas import LocalLambdaContext

    seed(checkpoints=["snap_xyz789"])

    answer = lambda_handler(load_event("api_restart_force_snapshot.json"), LocalLambdaContext("ApiFunction"))

    assert answer["statusCode"] == 200, answer["body"]
    body = json.loads(answer["body"])
    assert body["data"]["restart_type"] == "force" and body["data"]["restart_status"] == "ready"
    assert "root_volume: current -> snap_xyz789" in body["data"]["configuration_changes"]
    assert body["meta"]["warnings"] == []


def test_the_api_function_answers_the_cancel_proxy_event(aws: LocalAws, seed: Seed, api: ApiClient) -> None:
    """Given a restart waiting in starting_services, when the cancel event (a bodiless
    `curl -X POST`, its restart id set to the running one) arrives, then it is accepted (202)."""
    from restarter.handlers.api.app import lambda_handler
    from restarter_local.lambdas import LocalLambdaContext

    cluster = seed()
    aws.agent.set_never_healthy(cluster.instance_ids[0])
    restart_id = api.call("POST", RESTART, {"timeout_minutes": 60}).json()["data"]["restart_id"]
    event = load_event("api_cancel_restart.json")
    sample_id = "rst_0123456789abcdef"
    event["path"] = event["path"].replace(sample_id, restart_id)
    event["requestContext"]["path"] = event["requestContext"]["path"].replace(sample_id, restart_id)
    event["pathParameters"]["proxy"] = event["pathParameters"]["proxy"].replace(sample_id, restart_id)

    answer = lambda_handler(event, LocalLambdaContext("ApiFunction"))

    assert answer["statusCode"] == 202, answer["body"]
    assert json.loads(answer["body"])["data"]["cancel_requested_at"]
    aws.agent.clear_never_healthy(cluster.instance_ids[0])
    aws.wait_for_executions()
    assert api.call("GET", f"/v1/restarts/{restart_id}").json()["data"]["status"] == "cancelled"


def test_api_gateways_own_answers_use_the_stable_codes() -> None:
    """What API Gateway answers before the function runs (template.yaml `GatewayResponses`) is
    the same envelope, with the API's stable codes."""
    from restarter_local.template import load_template

    responses = load_template()["Resources"]["RestarterApi"]["Properties"]["GatewayResponses"]

    answered = {}
    for name, response in responses.items():
        envelope = json.loads(
            response["ResponseTemplates"]["application/json"].replace("$context.error.messageString", '"m"')
        )
        assert set(envelope) == {"success", "error"} and envelope["success"] is False, name
        assert set(envelope["error"]) == {"code", "message", "details"}, name
        answered[name] = (response.get("StatusCode"), envelope["error"]["code"])
    assert {
        "MISSING_AUTHENTICATION_TOKEN": (404, "NOT_FOUND"),
        "UNAUTHORIZED": (401, "UNAUTHORIZED"),
        "ACCESS_DENIED": (403, "FORBIDDEN"),
        "THROTTLED": (429, "RATE_LIMITED"),
        "QUOTA_EXCEEDED": (429, "RATE_LIMITED"),
        "REQUEST_TOO_LARGE": (413, "VALIDATION_ERROR"),
        "DEFAULT_5XX": (None, "INTERNAL"),
    }.items() <= answered.items()
    stable = {"VALIDATION_ERROR", "INVALID_STATE", "NOT_FOUND", "CONFLICT", "UNAUTHORIZED", "FORBIDDEN", "RATE_LIMITED"}
    assert {code for _, code in answered.values()} <= stable | {"INTERNAL"}
