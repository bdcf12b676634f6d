"""The API's own route table (405 answers, the body guard) agrees with what Powertools serves."""

from __future__ import annotations

import os

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")

from restarter.handlers.api.app import DOCS_PATH, OPENAPI_PATH, ROUTES, app
from restarter.handlers.api.route_table import compile_rule


def test_every_documented_operation_is_declared_with_its_body() -> None:
    """Given the OpenAPI document Powertools builds from its routes, then the table holds each
    operation, and says it reads a body exactly where the document has a request body."""
    schema = app.get_openapi_schema()
    documented = set()
    for path, item in (schema.paths or {}).items():
        for method in ("get", "put", "post", "delete", "patch"):
            operation = getattr(item, method, None)
            if operation is not None:
                documented.add((method.upper(), path, operation.requestBody is not None))
    declared = {(r.method, r.rule.replace("<", "{").replace(">", "}"), r.reads_body) for r in ROUTES}

    assert declared - documented == {("GET", OPENAPI_PATH, False), ("GET", DOCS_PATH, False)}
    assert documented <= declared


def test_the_table_answers_allowed_methods_and_bodies_by_path() -> None:
    assert ROUTES.allowed_methods("/v1/clusters/cluster_abc123/restart") == ["POST"]
    assert ROUTES.allowed_methods("/v1/schedules/nightly") == ["DELETE", "GET"]
    assert ROUTES.allowed_methods("/v1/clusters/a/b/c") == []
    assert ROUTES.reads_body("post", "/v1/rollouts/rol_1/resume")
    assert not ROUTES.reads_body("POST", "/v1/restarts/rst_1/cancel")


def test_a_rule_matches_one_segment_per_parameter_and_trailing_slashes() -> None:
    rule = compile_rule("/v1/clusters/<cluster_id>")
    assert rule.match("/v1/clusters/bad id!")  # the path pattern refuses it later, 400
    assert rule.match("/v1/clusters/abc/")
    assert not rule.match("/v1/clusters/abc/restart")
    assert not rule.match("/v1/clusters/")
