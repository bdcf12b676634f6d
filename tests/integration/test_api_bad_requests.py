"""The Restart Cluster API refusing what it cannot do: bounds, every 4xx code in the envelope, tenant
isolation, keys and roles, content types, bodies the parser cannot read, forged next tokens."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from restarter_local.engine import LocalAws
from tests.integration.harness import RESTART, ApiClient, Seed

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
