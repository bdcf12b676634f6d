"""The API's contract: the committed OpenAPI document matches the code and shows the errors it
answers, the API function answers the sample proxy events, and API Gateway's own answers use the
stable codes."""

from __future__ import annotations

import json

from restarter_local.engine import LocalAws
from tests.conftest import REPO, load_event
from tests.integration.harness import RESTART, ApiClient, Seed

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
