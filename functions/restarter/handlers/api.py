"""ApiFunction: the Restart Cluster API (API Gateway REST, Lambda proxy), base path `/v1`.

Routes parse, call one service, and shape the seed's envelope. Every failure, whatever
raised it, leaves here as `{"success": false, "error": {"code", "message", "details"}}`.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestUnsupportedContentType
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError as OpenApiValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query
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
from restarter.domain.errors import ProviderError, RestarterError, TransientProviderError
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
    ResumeRolloutRequest,
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
from restarter.services.restart_intake import accept_restart
from restarter.wiring import get_dependencies

MAX_BODY_BYTES = 64 * 1024
CLUSTER_ID = r"^[A-Za-z0-9_.:-]{1,128}$"
RESTART_ID = r"^rst_[a-z0-9]{1,64}$"
JSON_MEDIA_TYPE = "application/json"
IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY_MAX_CHARS = 200
# Visible ASCII only: no spaces, no control characters, never truncated (two long keys must not collide).
IDEMPOTENCY_KEY_PATTERN = rf"^[!-~]{{1,{IDEMPOTENCY_KEY_MAX_CHARS}}}$"
IDEMPOTENCY_KEY_RULE = f"must be 1 to {IDEMPOTENCY_KEY_MAX_CHARS} visible ASCII characters (no spaces)"
IDEMPOTENCY_DOC: dict[str, Any] = {
    "pattern": IDEMPOTENCY_KEY_PATTERN,
    "max_length": IDEMPOTENCY_KEY_MAX_CHARS,
    "description": (
        "Makes a retry safe: the same key with the same request answers the first answer again; the same "
        f"key with another request is 409 `CONFLICT`. Keys are per tenant, kept 24 hours, and {IDEMPOTENCY_KEY_RULE}."
    ),
}
# What a client may be told when a dependency (AWS) is throttled or unavailable.
RETRY_AFTER_SECONDS = 5


class _Resolver(APIGatewayRestResolver):
    """The REST resolver, documenting what this API really answers.

    With validation on, Powertools documents a 422 `HTTPValidationError` on every operation and
    offers no switch to leave it out; this API answers every invalid request 400
    `VALIDATION_ERROR` in the error envelope, so the 422 (and its schemas) are taken out of the
    document, the Swagger UI's included.
    """

    def get_openapi_schema(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return _without_validation_422(super().get_openapi_schema(*args, **kwargs))


def _without_validation_422(schema: Any) -> Any:
    for item in (schema.paths or {}).values():
        for method in ("get", "put", "post", "delete", "patch", "head", "options", "trace"):
            operation = getattr(item, method, None)
            if operation is not None and operation.responses:
                operation.responses.pop(422, None)
    schemas = schema.components.schemas if schema.components else None
    if schemas:
        schemas.pop("HTTPValidationError", None)
        for name in ("ResponseValidationError", "ValidationError"):  # the first refers to the second
            if f'"#/components/schemas/{name}"' not in schema.model_dump_json(by_alias=True):
                schemas.pop(name, None)
    return schema


class _OversizedInt:
    """Stands in for an integer literal with more digits than `int()` converts."""


_OVERSIZED_INT = _OversizedInt()


def _json_body(text: str) -> Any:
    """A request body as JSON. What `json.loads` would raise past Powertools (and answer 500)
    is refused 400: nesting deeper than the interpreter's recursion limit, and integers with more
    digits than `int()` converts (the offending field is named)."""
    oversized: list[bool] = []

    def parse_int(digits: str) -> Any:
        try:
            return int(digits)
        except ValueError:  # sys.get_int_max_str_digits()
            oversized.append(True)
            return _OVERSIZED_INT

    try:
        value = json.loads(text, parse_int=parse_int)
    except RecursionError:
        raise OpenApiValidationError(
            [{"type": "json_too_deep", "loc": ("body",), "msg": "JSON nested too deeply"}]
        ) from None
    if oversized:
        raise OpenApiValidationError(
            [
                {"type": "int_too_long", "loc": ("body", *where), "msg": "Integer has too many digits"}
                for where in _locations_of(value, _OVERSIZED_INT)
            ]
        )
    return value


def _locations_of(value: Any, marker: object) -> list[tuple[int | str, ...]]:
    """Where `marker` sits in parsed JSON (walked without recursion: the nesting may be deep)."""
    found: list[tuple[int | str, ...]] = []
    stack: list[tuple[Any, tuple[int | str, ...]]] = [(value, ())]
    while stack:
        node, where = stack.pop()
        if node is marker:
            found.append(where)
        elif isinstance(node, dict):
            stack.extend((child, (*where, str(key))) for key, child in node.items())
        elif isinstance(node, list):
            stack.extend((child, (*where, index)) for index, child in enumerate(node))
    return sorted(found, key=str)


app = _Resolver(enable_validation=True, json_body_deserializer=_json_body)


# ------------------------------------------------------------------ the documented answers


def _envelope_answer(description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"model": ErrorEnvelope}}, **extra}


ERRORS: dict[int, Any] = {
    400: _envelope_answer(
        "`VALIDATION_ERROR`: an invalid body, path, query or header; `details.errors` names each field"
    ),
    401: _envelope_answer("`UNAUTHORIZED`: missing or invalid API key"),
    403: _envelope_answer("`FORBIDDEN`: the key lacks the scope"),
    404: _envelope_answer("`NOT_FOUND`: no such resource (or not one of your tenant's)"),
    405: _envelope_answer("`METHOD_NOT_ALLOWED`: `details.allowed` lists the methods of the path"),
    429: _envelope_answer("`RATE_LIMITED`: too many requests for this key"),
    500: _envelope_answer("`INTERNAL`: an unexpected error"),
    502: _envelope_answer("`INTERNAL`: a dependency failed"),
    503: _envelope_answer(
        "`INTERNAL`: a dependency is busy; retry after `Retry-After` seconds",
        headers={"Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}},
    ),
}
CONFLICT_ERRORS: dict[int, Any] = {
    409: _envelope_answer("`INVALID_STATE` or `CONFLICT` (an `Idempotency-Key` reused with another request)"),
}
BODY_ERRORS: dict[int, Any] = {
    413: _envelope_answer(f"`VALIDATION_ERROR`: the body is larger than {MAX_BODY_BYTES} bytes"),
    415: _envelope_answer("`VALIDATION_ERROR`: the body is not `application/json`"),
}


# ------------------------------------------------------------------ envelopes


def _documented(
    status: int,
    description: str,
    model: type,
    *,
    read: bool = False,
    body: bool = False,
    extra: dict[int, Any] | None = None,
) -> dict[int, Any]:
    """The route's success answer and its error answers, for the OpenAPI document: every route
    shares `ERRORS`; a route that changes something may conflict; one that reads a body may find
    it too large or not JSON."""
    answers = {**ERRORS, **({} if read else CONFLICT_ERRORS), **(BODY_ERRORS if body else {}), **(extra or {})}
    success = {status: {"description": description, "content": {"application/json": {"model": model}}}}
    return {**success, **dict(sorted(answers.items()))}


def _json(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> Response[str]:
    return Response(
        status_code=status,
        content_type="application/json",
        body=json.dumps(payload, default=str),
        headers=headers,
    )


def _error(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[str]:
    envelope = {"success": False, "error": {"code": code, "message": message, "details": details or {}}}
    return _json(status, envelope, headers)


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
    """Domain errors keep their code; failures of a dependency answer the stable `INTERNAL` with
    a generic message (503 with `Retry-After` when a retry may help). What AWS said is logged
    with structured keys, never returned: it can name resources, accounts and policies."""
    if isinstance(exc, ForbiddenError):  # refused before the intake, which audits its own refusals
        _audit_refusal(exc.code, exc.message)
    if isinstance(exc, TransientProviderError):
        logger.warning("dependency busy", error_code=exc.code, error_detail=exc.message, dependency=exc.details)
        return _error(
            503,
            "INTERNAL",
            "A dependency is busy, retry",
            {"retry_after_seconds": RETRY_AFTER_SECONDS},
            {"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    if isinstance(exc, ProviderError):
        logger.error("dependency failed", error_code=exc.code, error_detail=exc.message, dependency=exc.details)
        return _error(502, "INTERNAL", "A dependency failed")
    if exc.http_status >= 500:
        logger.error("internal error", error_code=exc.code, error_detail=exc.message, details=exc.details)
        return _error(500, "INTERNAL", "Internal error")
    return _error(exc.http_status, exc.code, exc.message, exc.details)


@app.exception_handler(OpenApiValidationError)
def _validation_error(exc: OpenApiValidationError) -> Response[str]:
    errors = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        where = loc[1:] if loc and loc[0] in ("body", "path", "query", "header") else loc
        if err.get("type") == "json_invalid":
            errors.append({"field": "body", "message": "Malformed JSON", "type": "json_invalid"})
            continue
        if loc[:2] == ("header", IDEMPOTENCY_HEADER.lower()):
            errors.append(
                {
                    "field": IDEMPOTENCY_HEADER,
                    "message": f"{IDEMPOTENCY_HEADER} {IDEMPOTENCY_KEY_RULE}",
                    "type": "header",
                }
            )
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


@app.exception_handler(RequestUnsupportedContentType)
def _unsupported_content_type(exc: RequestUnsupportedContentType) -> Response[str]:
    """Normally refused before routing (`_refuse_unreadable_body`); kept so it can never be a 500."""
    content_type = str(app.current_event.headers.get("content-type") or "")
    _audit_refusal("VALIDATION_ERROR", "Unsupported content type")
    return _error(
        415, "VALIDATION_ERROR", "Content-Type must be application/json", {"content_type": content_type[:100]}
    )


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
    """Bodies we will not read, refused before routing: too large, or not JSON.

    A route that reads a body refuses another content type even with an empty body (a form
    post is not an empty JSON object); no content type at all with an empty body is `{}`.
    """
    body = event.get("body") or ""
    if len(body.encode()) > MAX_BODY_BYTES:
        return _proxy_error(413, "VALIDATION_ERROR", "Request body too large", {"max_bytes": MAX_BODY_BYTES})
    content_type = _normalized_content_type(event)
    media_type = content_type.split(";")[0].strip()
    if content_type and media_type != JSON_MEDIA_TYPE and (body.strip() or _reads_a_body(event)):
        return _proxy_error(
            415, "VALIDATION_ERROR", "Content-Type must be application/json", {"content_type": content_type[:100]}
        )
    return None


def _normalized_content_type(event: dict[str, Any]) -> str:
    """The request's Content-Type, lower-cased in the event too: media types are case-insensitive
    (RFC 9110) but Powertools compares them as written, and refuses `APPLICATION/JSON`."""
    found = ""
    for field in ("headers", "multiValueHeaders"):
        headers = event.get(field) or {}
        for name, value in list(headers.items()):
            if name.lower() != "content-type":
                continue
            if isinstance(value, list):
                headers[name] = [str(v).strip().lower() for v in value]
                found = headers[name][-1] if headers[name] else found
            elif value is not None:
                headers[name] = found = str(value).strip().lower()
    return found


def _reads_a_body(event: dict[str, Any]) -> bool:
    """Whether the route the request goes to takes a JSON body."""
    method = str(event.get("httpMethod") or "").upper()
    path = str(event.get("path") or "")
    return any(
        route.method == method and route.rule.match(path) and route.dependant.body_params
        for route in app._static_routes + app._dynamic_routes
    )


# ------------------------------------------------------------------ who is calling


def _principal() -> Principal:
    """The caller, as the authorizer described it; no context means API Gateway was bypassed."""
    return Principal.from_authorizer_context(app.current_event.request_context.authorizer.get_context())


def _audit_refusal(code: str, message: str) -> None:
    """A restart refused before the intake saw it (body validation, scope) goes to the cluster's
    trail too, if the cluster is the caller's (`_audit_request` writes every refusal to the
    tenant's trail)."""
    event = app.current_event
    if event.http_method != "POST" or not event.path.endswith("/restart"):
        return
    try:
        principal = _principal()
    except RestarterError:
        return
    cluster_id = event.path.removeprefix(f"{API_PREFIX}/clusters/").removesuffix("/restart")
    restart_api.record_refused_restart(
        get_dependencies(), cluster_id, principal.tenant_id, f"{principal.tenant_id}/{principal.key_id}", code, message
    )


def _audit_request(event: dict[str, Any], response: dict[str, Any]) -> None:
    """The tenant's request trail: every request that changes something (restart, cancel,
    rollout, schedule), accepted or refused, and every refusal or failure of any request, with
    requester, tenant, method, path, outcome and status. Reads that succeed are not written: they
    change nothing, and auditing them would double the writes of every poll. Headers, query and
    body are never written (keys, tokens, environment values)."""
    method = str(event.get("httpMethod") or "").upper()
    status = int(response.get("statusCode") or 500)
    if method in ("GET", "HEAD", "OPTIONS") and status < 400:
        return
    try:
        context = event.get("requestContext") or {}
        try:
            principal: Principal | None = Principal.from_authorizer_context(context.get("authorizer"))
        except RestarterError:
            principal = None
        code = None
        if status >= 400:
            try:
                code = json.loads(response.get("body") or "{}").get("error", {}).get("code")
            except (ValueError, AttributeError):
                code = None
        restart_api.record_api_request(
            get_dependencies(),
            tenant_id=principal.tenant_id if principal else None,
            requested_by=f"{principal.tenant_id}/{principal.key_id}" if principal else "anonymous",
            method=method,
            path=str(event.get("path") or ""),
            status=status,
            error_code=code,
            request_id=str(context.get("requestId") or ""),
        )
    except Exception:  # the answer stands; a lost entry is logged
        logger.exception("audit entry not written", method=method, status=status)


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
    """Accept the restart; the answer's data, with `warnings` for requested changes that change nothing."""
    deps = get_dependencies()
    # Another tenant's cluster is refused here, before the intake, which would audit the
    # refusal in that cluster's trail (the tenant's own trail gets it, see `_audit_request`).
    cluster = restart_api.visible_cluster(deps, command["tenant_id"], command["cluster_id"])
    request = RestartRequest.model_validate(command["body"])
    record = accept_restart(
        deps,
        command["cluster_id"],
        request,
        trigger="api",
        requested_by=command["requested_by"],
        tenant_id=command["tenant_id"],
    )
    data = restart_accepted(record, "restarting").model_dump(mode="json")
    return {**data, "warnings": restart_api.unchanged_configuration_notes(cluster, request, record.target)}


@app.post(
    f"{API_PREFIX}/clusters/<cluster_id>/restart",
    summary="Restart a cluster",
    description=(
        "Restart a running, stopped or errored GPU cluster, optionally applying configuration updates. "
        "`wait_for_ready` holds the answer until the restart ends or the API's wait budget passes; "
        "follow up with `GET /v1/restarts/{restart_id}`. An `Idempotency-Key` header makes retries safe. "
        "`meta.warnings` names requested changes that change nothing (e.g. minimums the current instance "
        "type already meets)."
    ),
    tags=["Restarts"],
    responses=_documented(
        200,
        "Cluster restart initiated",
        RestartAcceptedResponse,
        body=True,
        extra={
            504: _envelope_answer("`RESTART_TIMED_OUT`: with `wait_for_ready`, the restart passed its timeout"),
        },
    ),
)
def restart_cluster(
    cluster_id: Annotated[str, Path(pattern=CLUSTER_ID)],
    body: Annotated[RestartRequest | None, Body()] = None,
    idempotency_key: Annotated[str | None, Header(alias=IDEMPOTENCY_HEADER, **IDEMPOTENCY_DOC)] = None,
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
    if idempotency_key is not None:
        command["idempotency_key"] = f"{principal.tenant_id}#{idempotency_key}"
        command["fingerprint"] = {"cluster_id": cluster_id, "body": command["body"]}
        start, config = _idempotent_start(get_dependencies().settings.idempotency_table)
        config.register_lambda_context(app.lambda_context)  # an in-progress record expires with this call
        data = dict(start(command=command))
    else:
        data = _start(command)
    warnings = list(data.pop("warnings", []))
    accepted = RestartAcceptedData.model_validate(data)
    if not request.wait_for_ready:
        return _ok(accepted, wait_for_ready=False, completed=False, waited_seconds=0.0, warnings=warnings)
    return _answer_after_wait(accepted, warnings)


def _answer_after_wait(accepted: RestartAcceptedData, warnings: list[str]) -> Response[str]:
    deps = get_dependencies()
    waited = restart_api.wait_until_finished(deps, accepted.restart_id, deps.settings.api_wait_budget_seconds)
    record = waited.record
    cluster = deps.clusters.get(record.cluster_id)
    meta: dict[str, Any] = {
        "wait_for_ready": True,
        "completed": waited.finished,
        "waited_seconds": waited.waited_seconds,
        "warnings": warnings,
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
    responses=_documented(200, "The cluster", ClusterResponse, read=True),
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
    responses=_documented(200, "Clusters", ClusterListResponse, read=True),
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
    responses=_documented(200, "The restart", RestartResponse, read=True),
)
def get_restart(restart_id: Annotated[str, Path(pattern=RESTART_ID)]) -> Response[str]:
    principal = _principal()
    require_scope(principal, "read")
    return _ok(restart_view(restart_api.get_restart(get_dependencies(), principal.tenant_id, restart_id)))


@app.get(
    f"{API_PREFIX}/clusters/<cluster_id>/restarts",
    summary="Restart history of a cluster, newest first",
    tags=["Restarts"],
    responses=_documented(200, "A page of restarts", RestartListResponse, read=True),
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
    responses=_documented(202, "Rollout started", RolloutResponse, body=True),
)
def start_rollout(
    body: Annotated[RolloutSpec, Body()],
    idempotency_key: Annotated[str | None, Header(alias=IDEMPOTENCY_HEADER, **IDEMPOTENCY_DOC)] = None,
) -> Response[str]:
    principal = _principal()
    require_scope(principal, "restart")
    key = idempotency_key
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
    responses=_documented(200, "The rollout", RolloutResponse, read=True),
)
def get_rollout(rollout_id: Annotated[str, Path(pattern=ROLLOUT_ID_PATTERN)]) -> Response[str]:
    principal = _principal()
    require_scope(principal, "read")
    record = rollouts.get_rollout(rollouts.get_rollout_dependencies(), rollout_id, tenant_id=principal.tenant_id)
    return _ok(rollout_view(record))


@app.post(
    f"{API_PREFIX}/rollouts/<rollout_id>/resume",
    summary="Resume a rollout: run again every cluster that has not succeeded",
    description=(
        "Clusters that succeeded keep their result and are not restarted again; the others keep their earlier "
        "error until they run again. An optional `maintenance_window` (the rollout's window shape) resumes it in a "
        "later window and is recorded on the rollout; without it the rollout's window stays. An `Idempotency-Key` "
        "header makes a retried request answer the same resume (200, `replayed`) instead of resuming again."
    ),
    tags=["Rollouts"],
    responses=_documented(202, "Rollout resumed", RolloutResponse, body=True),
)
def resume_rollout(
    rollout_id: Annotated[str, Path(pattern=ROLLOUT_ID_PATTERN)],
    body: Annotated[ResumeRolloutRequest | None, Body()] = None,
    idempotency_key: Annotated[str | None, Header(alias=IDEMPOTENCY_HEADER, **IDEMPOTENCY_DOC)] = None,
) -> Response[str]:
    principal = _principal()
    require_scope(principal, "restart")
    record, resumed = rollouts.resume_rollout(
        rollouts.get_rollout_dependencies(),
        rollout_id,
        tenant_id=principal.tenant_id,
        window=body.maintenance_window if body is not None else None,
        idempotency_key=f"{principal.tenant_id}#{idempotency_key}" if idempotency_key else None,
        requested_by=f"{principal.tenant_id}/{principal.key_id}",
    )
    return _ok(rollout_view(record), status=202 if resumed else 200, replayed=not resumed)


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
    responses=_documented(201, "Schedule created", ScheduleCreatedResponse, body=True),
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
    responses=_documented(200, "Schedules", ScheduleListResponse, read=True),
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
    responses=_documented(200, "The schedule", ScheduleResponse, read=True),
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


def _openapi_security() -> dict[str, Any]:
    """`Authorization: Bearer <key>` on every operation, so Swagger UI's "Authorize" sends the key."""
    from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer

    return {
        "security_schemes": {"bearerAuth": HTTPBearer(scheme="bearer", bearerFormat="API key")},
        "security": [{"bearerAuth": []}],
    }


def openapi_document() -> str:
    return app.get_openapi_json_schema(**OPENAPI_INFO, **_openapi_security())


app.enable_swagger(
    path=f"{API_PREFIX}/docs",
    **OPENAPI_INFO,
    **_openapi_security(),
    persist_authorization=True,
)


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True, log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        response = _refuse_unreadable_body(event) or app.resolve(event, context)
    except Exception:  # the envelope, never a traceback, whatever failed
        logger.exception("unhandled error")
        response = _proxy_error(500, "INTERNAL", "Internal error")
    _audit_request(event, response)
    return response
