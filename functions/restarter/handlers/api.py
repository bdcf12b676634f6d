"""ApiFunction: the Restart Cluster API (API Gateway REST, Lambda proxy), base path `/v1`.

Routes parse, call one service, and shape the seed's envelope. Every failure, whatever
raised it, leaves here as `{"success": false, "error": {"code", "message", "details"}}`.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError as OpenApiValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from restarter.domain.auth import ForbiddenError, Principal, require_scope
from restarter.domain.errors import RestarterError
from restarter.domain.models import RestartRequest
from restarter.domain.rollouts import ROLLOUT_ID_PATTERN, RolloutSpec, rollout_id_for_key
from restarter.domain.schedules import SCHEDULE_NAME_PATTERN, ScheduleRequest
from restarter.domain.validation import field_path
from restarter.handlers.api_models import (
    API_PREFIX,
    ClusterListResponse,
    ClusterResponse,
    ErrorEnvelope,
    RestartAcceptedData,
    RestartAcceptedResponse,
    RestartListResponse,
    RestartResponse,
    RolloutResponse,
    ScheduleCreatedResponse,
    ScheduleListResponse,
    ScheduleResponse,
    cluster_view,
    restart_accepted,
    restart_view,
    rollout_view,
)
from restarter.observability import logger, metrics
from restarter.services import restart_api, rollouts, schedules
from restarter.services.dependencies import get_dependencies
from restarter.services.restart_intake import accept_restart

MAX_BODY_BYTES = 64 * 1024
CLUSTER_ID = r"^[A-Za-z0-9_.:-]{1,128}$"
RESTART_ID = r"^rst_[a-z0-9]{1,64}$"

app = APIGatewayRestResolver(enable_validation=True)

ERRORS: dict[int, Any] = {
    400: {"description": "Invalid request", "content": {"application/json": {"model": ErrorEnvelope}}},
    401: {"description": "Missing or invalid API key", "content": {"application/json": {"model": ErrorEnvelope}}},
    403: {"description": "The key lacks the scope", "content": {"application/json": {"model": ErrorEnvelope}}},
    404: {"description": "Not found", "content": {"application/json": {"model": ErrorEnvelope}}},
    409: {"description": "Invalid state or conflict", "content": {"application/json": {"model": ErrorEnvelope}}},
}


# ------------------------------------------------------------------ envelopes


def _documented(status: int, description: str, model: type) -> dict[int, Any]:
    """The route's success answer and the shared error answers, for the OpenAPI document."""
    return {status: {"description": description, "content": {"application/json": {"model": model}}}, **ERRORS}


def _json(status: int, payload: dict[str, Any]) -> Response[str]:
    return Response(status_code=status, content_type="application/json", body=json.dumps(payload, default=str))


def _error(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> Response[str]:
    return _json(status, {"success": False, "error": {"code": code, "message": message, "details": details or {}}})


def _ok(data: Any, status: int = 200, **meta: Any) -> Response[str]:
    body = data.model_dump(mode="json") if hasattr(data, "model_dump") else data
    meta_fields: dict[str, Any] = {"request_id": _request_id(), **meta}
    return _json(status, {"success": True, "data": body, "meta": meta_fields})


def _request_id() -> str:
    try:
        return str(app.current_event.request_context.request_id or "local")
    except (AttributeError, KeyError):
        return "local"


@app.exception_handler(RestarterError)
def _restarter_error(exc: RestarterError) -> Response[str]:
    if isinstance(exc, ForbiddenError):  # refused before the intake, which audits its own refusals
        _audit_refusal(exc.code, exc.message)
    return _error(exc.http_status, exc.code, exc.message, exc.details)


@app.exception_handler(OpenApiValidationError)
def _validation_error(exc: OpenApiValidationError) -> Response[str]:
    errors = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        where = loc[1:] if loc and loc[0] in ("body", "path", "query") else loc
        if err.get("type") == "json_invalid":
            errors.append({"field": "body", "message": "Malformed JSON", "type": "json_invalid"})
            continue
        errors.append({"field": field_path(where), "message": str(err.get("msg", "")), "type": str(err.get("type"))})
    fields = ", ".join(sorted({e["field"] for e in errors})) or "body"
    _audit_refusal("VALIDATION_ERROR", f"Invalid request: {fields}")
    return _error(400, "VALIDATION_ERROR", f"Invalid request: {fields}", {"errors": errors})


@app.exception_handler(IdempotencyValidationError)
def _idempotency_mismatch(exc: IdempotencyValidationError) -> Response[str]:
    _audit_refusal("CONFLICT", "Idempotency-Key reused with a different request")
    return _error(
        409,
        "CONFLICT",
        "This Idempotency-Key was used with a different request",
        {"header": "Idempotency-Key", "suggestion": "Use a new key for a different request"},
    )


@app.exception_handler(IdempotencyAlreadyInProgressError)
def _idempotency_in_progress(exc: IdempotencyAlreadyInProgressError) -> Response[str]:
    return _error(409, "CONFLICT", "A request with this Idempotency-Key is in progress", {"header": "Idempotency-Key"})


@app.exception_handler(Exception)
def _unexpected(exc: Exception) -> Response[str]:
    logger.exception("unhandled error", error_type=type(exc).__name__)
    return _error(500, "INTERNAL", "Internal error")


@app.not_found
def _not_found(exc: Exception) -> Response[str]:
    path = app.current_event.path
    method = app.current_event.http_method
    allowed = sorted({route.method for route in app._static_routes + app._dynamic_routes if route.rule.match(path)})
    if allowed:
        return _error(405, "METHOD_NOT_ALLOWED", f"{method} is not allowed on this path", {"allowed": allowed})
    return _error(404, "NOT_FOUND", "No such resource", {"path": path, "method": method})


def _proxy_error(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """An error envelope as a raw proxy response, for answers given outside the resolver."""
    envelope = {"success": False, "error": {"code": code, "message": message, "details": details or {}}}
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(envelope),
        "isBase64Encoded": False,
    }


def _refuse_unreadable_body(event: dict[str, Any]) -> dict[str, Any] | None:
    """Bodies we will not read, refused before routing: too large, or not JSON."""
    body = event.get("body") or ""
    if len(body.encode()) > MAX_BODY_BYTES:
        return _proxy_error(413, "VALIDATION_ERROR", "Request body too large", {"max_bytes": MAX_BODY_BYTES})
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    content_type = str(headers.get("content-type") or "").lower()
    if body.strip() and content_type and not content_type.startswith("application/json"):
        return _proxy_error(
            415, "VALIDATION_ERROR", "Content-Type must be application/json", {"content_type": content_type}
        )
    return None


# ------------------------------------------------------------------ who is calling


def _principal() -> Principal:
    """The caller, as the authorizer described it; no context means API Gateway was bypassed."""
    return Principal.from_authorizer_context(app.current_event.request_context.authorizer.get_context())


def _audit_refusal(code: str, message: str) -> None:
    """Refusals that never reach a service (body validation) are audited here."""
    event = app.current_event
    if event.http_method != "POST" or not event.path.endswith("/restart"):
        return
    try:
        principal = _principal()
    except RestarterError:
        return
    cluster_id = event.path.removeprefix(f"{API_PREFIX}/clusters/").removesuffix("/restart")
    restart_api.record_refused_restart(
        get_dependencies(), cluster_id, f"{principal.tenant_id}/{principal.key_id}", code, message
    )


# ------------------------------------------------------------------ restart


@lru_cache(maxsize=4)
def _idempotent_start(table: str) -> tuple[Any, IdempotencyConfig]:
    """Build the idempotent intake once per container (and table): config is read on first use."""
    persistence = DynamoDBPersistenceLayer(table_name=table)
    config = IdempotencyConfig(
        event_key_jmespath="idempotency_key",
        payload_validation_jmespath="fingerprint",
        expires_after_seconds=24 * 3600,
    )

    @idempotent_function(data_keyword_argument="command", persistence_store=persistence, config=config)
    def start(command: dict[str, Any]) -> dict[str, Any]:
        return _start(command)

    return start, config


def _start(command: dict[str, Any]) -> dict[str, Any]:
    deps = get_dependencies()
    record = accept_restart(
        deps,
        command["cluster_id"],
        RestartRequest.model_validate(command["body"]),
        trigger="api",
        requested_by=command["requested_by"],
        tenant_id=command["tenant_id"],
    )
    return restart_accepted(record, "restarting").model_dump(mode="json")


@app.post(
    f"{API_PREFIX}/clusters/<cluster_id>/restart",
    summary="Restart a cluster",
    description=(
        "Restart a running, stopped or errored GPU cluster, optionally applying configuration updates. "
        "`wait_for_ready` holds the answer until the restart ends or the API's wait budget passes; "
        "follow up with `GET /v1/restarts/{restart_id}`. An `Idempotency-Key` header makes retries safe."
    ),
    tags=["Restarts"],
    responses=_documented(200, "Cluster restart initiated", RestartAcceptedResponse),
)
def restart_cluster(
    cluster_id: Annotated[str, Path(pattern=CLUSTER_ID)],
    body: Annotated[RestartRequest | None, Body()] = None,
) -> Response[str]:
    principal = _principal()
    require_scope(principal, "restart")
    request = body or RestartRequest()
    command = {
        "cluster_id": cluster_id,
        "tenant_id": principal.tenant_id,
        "requested_by": f"{principal.tenant_id}/{principal.key_id}",
        "body": request.model_dump(mode="json", exclude_unset=True),
    }
    key = app.current_event.headers.get("idempotency-key") or app.current_event.headers.get("Idempotency-Key")
    if key:
        command["idempotency_key"] = f"{principal.tenant_id}#{key[:200]}"
        command["fingerprint"] = {"cluster_id": cluster_id, "body": command["body"]}
        start, config = _idempotent_start(get_dependencies().settings.idempotency_table)
        config.register_lambda_context(app.lambda_context)  # an in-progress record expires with this call
        data = start(command=command)
    else:
        data = _start(command)
    accepted = RestartAcceptedData.model_validate(data)
    if not request.wait_for_ready:
        return _ok(accepted, wait_for_ready=False, completed=False, waited_seconds=0.0)
    return _answer_after_wait(accepted)


def _answer_after_wait(accepted: RestartAcceptedData) -> Response[str]:
    deps = get_dependencies()
    waited = restart_api.wait_until_finished(deps, accepted.restart_id, deps.settings.api_wait_budget_seconds)
    record = waited.record
    cluster = deps.clusters.get(record.cluster_id)
    meta: dict[str, Any] = {
        "wait_for_ready": True,
        "completed": waited.finished,
        "waited_seconds": waited.waited_seconds,
    }
    if record.status in ("ready", "restarting"):
        data = restart_accepted(record, cluster.status if cluster else "restarting")
        return _ok(data, **meta)
    code, status = {
        "timed_out": ("RESTART_TIMED_OUT", 504),
        "cancelled": ("RESTART_CANCELLED", 409),
    }.get(record.status, ("RESTART_FAILED", 502))
    details = {
        "restart_id": record.id,
        "status": record.status,
        "phase": record.error.phase if record.error else None,
        "reason": record.error.message if record.error else None,
        "rollback_notes": record.rollback_notes,
        "links": {"restart": f"{API_PREFIX}/restarts/{record.id}"},
    }
    return _json(
        status,
        {
            "success": False,
            "error": {"code": code, "message": f"The restart ended {record.status}", "details": details},
            "meta": {"request_id": _request_id(), **meta},
        },
    )


# ------------------------------------------------------------------ reads and cancel


@app.get(
    f"{API_PREFIX}/clusters/<cluster_id>",
    summary="Get a cluster",
    tags=["Clusters"],
    responses=_documented(200, "The cluster", ClusterResponse),
)
def get_cluster(cluster_id: Annotated[str, Path(pattern=CLUSTER_ID)]) -> Response[str]:
    principal = _principal()
    require_scope(principal, "read")
    details = restart_api.get_cluster(get_dependencies(), principal.tenant_id, cluster_id)
    return _ok(cluster_view(details.cluster, details.instances, details.current_restart))


@app.get(
    f"{API_PREFIX}/clusters",
    summary="List clusters",
    tags=["Clusters"],
    responses=_documented(200, "Clusters", ClusterListResponse),
)
def list_clusters(
    status: Annotated[str | None, Query(pattern=r"^(running|stopped|error|starting|stopping|restarting)$")] = None,
    label: Annotated[str | None, Query(max_length=256, description="`key=value` or `key`")] = None,
) -> Response[str]:
    principal = _principal()
    require_scope(principal, "read")
    deps = get_dependencies()
    clusters = restart_api.list_clusters(deps, principal.tenant_id, status=status, label=label)
    views = []
    for cluster in clusters:
        current = deps.restarts.get(cluster.current_restart_id) if cluster.current_restart_id else None
        views.append(cluster_view(cluster, [], current[0] if current else None).model_dump(mode="json"))
    return _ok(views)


@app.get(
    f"{API_PREFIX}/restarts/<restart_id>",
    summary="Get a restart: progress, phase history and result",
    tags=["Restarts"],
    responses=_documented(200, "The restart", RestartResponse),
)
def get_restart(restart_id: Annotated[str, Path(pattern=RESTART_ID)]) -> Response[str]:
    principal = _principal()
    require_scope(principal, "read")
    return _ok(restart_view(restart_api.get_restart(get_dependencies(), principal.tenant_id, restart_id)))


@app.get(
    f"{API_PREFIX}/clusters/<cluster_id>/restarts",
    summary="Restart history of a cluster, newest first",
    tags=["Restarts"],
    responses=_documented(200, "A page of restarts", RestartListResponse),
)
def list_restarts(
    cluster_id: Annotated[str, Path(pattern=CLUSTER_ID)],
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    next_token: Annotated[str | None, Query(max_length=2048)] = None,
) -> Response[str]:
    principal = _principal()
    require_scope(principal, "read")
    records, token = restart_api.list_restarts(
        get_dependencies(), principal.tenant_id, cluster_id, limit=limit, cursor=next_token
    )
    return _ok({"restarts": [restart_view(r).model_dump(mode="json") for r in records], "next_token": token})


@app.post(
    f"{API_PREFIX}/restarts/<restart_id>/cancel",
    summary="Cancel a restart",
    description="The execution stops at its next step, rolls back what it changed and releases the cluster lock.",
    tags=["Restarts"],
    responses=_documented(202, "Cancellation requested", RestartResponse),
)
def cancel_restart(restart_id: Annotated[str, Path(pattern=RESTART_ID)]) -> Response[str]:
    principal = _principal()
    require_scope(principal, "restart")
    record = restart_api.cancel_restart(
        get_dependencies(), principal.tenant_id, restart_id, f"{principal.tenant_id}/{principal.key_id}"
    )
    return _ok(restart_view(record), status=202)


# ------------------------------------------------------------------ rollouts


def _idempotency_key() -> str | None:
    headers = app.current_event.headers
    key = headers.get("idempotency-key") or headers.get("Idempotency-Key")
    return key[:200] if key else None


@app.post(
    f"{API_PREFIX}/rollouts",
    summary="Start a rollout: one restart request over many clusters",
    description=(
        "Targets by `cluster_ids`, `labels` or `name_pattern` (your clusters only); `max_concurrency` restarts at a "
        "time; a `failure_threshold` after which no new restart starts; no restart starts after "
        "`maintenance_window.end`. Production clusters (the `production_label`) get a 15-minute grace period and "
        "`preserve_state`. An `Idempotency-Key` header makes a retried request answer the same rollout."
    ),
    tags=["Rollouts"],
    responses=_documented(202, "Rollout started", RolloutResponse),
)
def start_rollout(body: Annotated[RolloutSpec, Body()]) -> Response[str]:
    principal = _principal()
    require_scope(principal, "restart")
    key = _idempotency_key()
    rollout_id = rollout_id_for_key(f"{principal.tenant_id}#{key}") if key else None
    record, created = rollouts.create_rollout(
        rollouts.get_rollout_dependencies(),
        body,
        requested_by=f"{principal.tenant_id}/{principal.key_id}",
        tenant_id=principal.tenant_id,
        trigger="api",
        rollout_id=rollout_id,
    )
    if not created and record.spec != body:
        _audit_refusal("CONFLICT", "Idempotency-Key reused with a different rollout")
        return _error(
            409,
            "CONFLICT",
            "This Idempotency-Key was used with a different request",
            {"header": "Idempotency-Key", "rollout_id": record.rollout_id},
        )
    return _ok(rollout_view(record), status=202 if created else 200, replayed=not created)


@app.get(
    f"{API_PREFIX}/rollouts/<rollout_id>",
    summary="Get a rollout: per-cluster results in the seed's shape",
    tags=["Rollouts"],
    responses=_documented(200, "The rollout", RolloutResponse),
)
def get_rollout(rollout_id: Annotated[str, Path(pattern=ROLLOUT_ID_PATTERN)]) -> Response[str]:
    principal = _principal()
    require_scope(principal, "read")
    record = rollouts.get_rollout(rollouts.get_rollout_dependencies(), rollout_id, tenant_id=principal.tenant_id)
    return _ok(rollout_view(record))


@app.post(
    f"{API_PREFIX}/rollouts/<rollout_id>/resume",
    summary="Resume a rollout: run again every cluster that has not succeeded",
    description="Clusters that succeeded keep their result and are not restarted again.",
    tags=["Rollouts"],
    responses=_documented(202, "Rollout resumed", RolloutResponse),
)
def resume_rollout(rollout_id: Annotated[str, Path(pattern=ROLLOUT_ID_PATTERN)]) -> Response[str]:
    principal = _principal()
    require_scope(principal, "restart")
    record = rollouts.resume_rollout(rollouts.get_rollout_dependencies(), rollout_id, tenant_id=principal.tenant_id)
    return _ok(rollout_view(record), status=202)


# ------------------------------------------------------------------ schedules


@app.post(
    f"{API_PREFIX}/schedules",
    summary="Schedule a maintenance rollout (EventBridge Scheduler)",
    description=(
        "`at(...)` once, `rate(...)` or `cron(...)` repeatedly, in `timezone`. Each firing resolves the targets "
        "anew and starts a rollout whose window ends `window_minutes` after the scheduled time. A firing "
        "delivered twice starts one rollout."
    ),
    tags=["Schedules"],
    responses=_documented(201, "Schedule created", ScheduleCreatedResponse),
)
def create_schedule(body: Annotated[ScheduleRequest, Body()]) -> Response[str]:
    principal = _principal()
    require_scope(principal, "restart")
    deps = get_dependencies()
    view, covered = schedules.create_schedule(
        deps, schedules.schedule_gateway(deps), principal.tenant_id, body, f"{principal.tenant_id}/{principal.key_id}"
    )
    return _ok(view, status=201, clusters_now=covered)


@app.get(
    f"{API_PREFIX}/schedules",
    summary="List your schedules",
    tags=["Schedules"],
    responses=_documented(200, "Schedules", ScheduleListResponse),
)
def list_schedules() -> Response[str]:
    principal = _principal()
    require_scope(principal, "read")
    views = schedules.list_schedules(schedules.schedule_gateway(get_dependencies()), principal.tenant_id)
    return _ok([v.model_dump(mode="json") for v in views])


@app.get(
    f"{API_PREFIX}/schedules/<name>",
    summary="Get a schedule",
    tags=["Schedules"],
    responses=_documented(200, "The schedule", ScheduleResponse),
)
def get_schedule(name: Annotated[str, Path(pattern=SCHEDULE_NAME_PATTERN)]) -> Response[str]:
    principal = _principal()
    require_scope(principal, "read")
    return _ok(schedules.get_schedule(schedules.schedule_gateway(get_dependencies()), principal.tenant_id, name))


@app.delete(
    f"{API_PREFIX}/schedules/<name>",
    summary="Delete a schedule",
    description="Future firings stop; a rollout it already started goes on.",
    tags=["Schedules"],
    responses=_documented(200, "Schedule deleted", ScheduleResponse),
)
def delete_schedule(name: Annotated[str, Path(pattern=SCHEDULE_NAME_PATTERN)]) -> Response[str]:
    principal = _principal()
    require_scope(principal, "restart")
    deps = get_dependencies()
    gateway = schedules.schedule_gateway(deps)
    view = schedules.get_schedule(gateway, principal.tenant_id, name)
    schedules.delete_schedule(deps, gateway, principal.tenant_id, name, f"{principal.tenant_id}/{principal.key_id}")
    return _ok(view)


# ------------------------------------------------------------------ the spec

OPENAPI_INFO: dict[str, Any] = {
    "title": "restarter — Restart Cluster API",
    "version": "1.0.0",
    "description": "Restart GPU clusters safely. Compatible with the Restart Cluster API contract.",
}


@app.get(f"{API_PREFIX}/openapi.json", include_in_schema=False)
def openapi_json() -> Response[str]:
    return Response(status_code=200, content_type="application/json", body=openapi_document())


def openapi_document() -> str:
    from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer

    return app.get_openapi_json_schema(
        **OPENAPI_INFO,
        security_schemes={"bearerAuth": HTTPBearer(scheme="bearer", bearerFormat="API key")},
        security=[{"bearerAuth": []}],
    )


app.enable_swagger(
    path=f"{API_PREFIX}/docs",
    **OPENAPI_INFO,
)


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True, log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        return _refuse_unreadable_body(event) or app.resolve(event, context)
    except Exception:  # the envelope, never a traceback, whatever failed
        logger.exception("unhandled error")
        return _proxy_error(500, "INTERNAL", "Internal error")
