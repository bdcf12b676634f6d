"""Restart a cluster (optionally waiting for the end), read restarts, cancel one."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)

from restarter.domain.models import RestartRequest
from restarter.handlers.api.depends import Adapters, Caller, Reader, Restarter
from restarter.handlers.api.envelopes import error_body, json_answer, ok
from restarter.handlers.api.models import (
    API_PREFIX,
    RestartAcceptedData,
    RestartAcceptedResponse,
    RestartListResponse,
    RestartResponse,
    restart_accepted,
    restart_view,
)
from restarter.handlers.api.openapi import documented, envelope_answer
from restarter.handlers.api.parameters import CLUSTER_ID, IDEMPOTENCY_DOC, IDEMPOTENCY_HEADER, RESTART_ID
from restarter.handlers.api.route_table import DeclaredRouter
from restarter.services import restart_api
from restarter.wiring import Dependencies, get_dependencies

router = DeclaredRouter()


@router.post(
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
    responses=documented(
        200,
        "Cluster restart initiated",
        RestartAcceptedResponse,
        body=True,
        extra={
            504: envelope_answer("`RESTART_TIMED_OUT`: with `wait_for_ready`, the restart passed its timeout"),
        },
    ),
)
def restart_cluster(
    cluster_id: Annotated[str, Path(pattern=CLUSTER_ID)],
    who: Restarter,
    deps: Adapters,
    body: Annotated[RestartRequest | None, Body()] = None,
    idempotency_key: Annotated[str | None, Header(alias=IDEMPOTENCY_HEADER, **IDEMPOTENCY_DOC)] = None,
) -> Response[str]:
    request = body or RestartRequest()
    command: dict[str, Any] = {
        "cluster_id": cluster_id,
        "tenant_id": who.tenant_id,
        "requested_by": who.requested_by,
        "body": request.model_dump(mode="json", exclude_unset=True),
    }
    if idempotency_key is not None:
        command["idempotency_key"] = f"{who.tenant_id}#{idempotency_key}"
        command["fingerprint"] = {"cluster_id": cluster_id, "body": command["body"]}
        start, config = _idempotent_start(deps.settings.idempotency_table)
        config.register_lambda_context(router.lambda_context)  # an in-progress record expires with this call
        data = dict(start(command=command))
    else:
        data = _start(deps, command)
    warnings = list(data.pop("warnings", []))
    accepted = RestartAcceptedData.model_validate(data)
    if not request.wait_for_ready:
        return ok(
            accepted, who.request_id, wait_for_ready=False, completed=False, waited_seconds=0.0, warnings=warnings
        )
    return _answer_after_wait(deps, who, accepted, warnings)


@lru_cache(maxsize=4)
def _idempotent_start(table: str) -> tuple[Any, IdempotencyConfig]:
    """The idempotent intake, built once per container (and table): a retried request with the
    same key and body answers the first answer again, stored 24 hours."""
    persistence = DynamoDBPersistenceLayer(table_name=table)
    config = IdempotencyConfig(
        event_key_jmespath="idempotency_key",
        payload_validation_jmespath="fingerprint",
        expires_after_seconds=24 * 3600,
    )

    @idempotent_function(
        data_keyword_argument="command",
        persistence_store=persistence,
        config=config,
        key_prefix="restarter.api.restart",
    )
    def start(command: dict[str, Any]) -> dict[str, Any]:
        return _start(get_dependencies(), command)

    return start, config


def _start(deps: Dependencies, command: dict[str, Any]) -> dict[str, Any]:
    """Accept the restart; the answer's data, with `warnings` for requested changes that change nothing."""
    record, warnings = restart_api.accept_api_restart(
        deps,
        cluster_id=command["cluster_id"],
        tenant_id=command["tenant_id"],
        requested_by=command["requested_by"],
        body=command["body"],
    )
    return {**restart_accepted(record, "restarting").model_dump(mode="json"), "warnings": warnings}


def _answer_after_wait(
    deps: Dependencies, who: Caller, accepted: RestartAcceptedData, warnings: list[str]
) -> Response[str]:
    waited = restart_api.wait_for_ready(deps, accepted.restart_id)
    meta: dict[str, Any] = {
        "wait_for_ready": True,
        "completed": waited.finished,
        "waited_seconds": waited.waited_seconds,
        "warnings": warnings,
    }
    failure = waited.failure
    if failure is None:
        return ok(restart_accepted(waited.record, waited.cluster_status), who.request_id, **meta)
    details = {**failure.details, "links": {"restart": f"{API_PREFIX}/restarts/{waited.record.id}"}}
    return json_answer(
        failure.http_status,
        {
            "success": False,
            "error": error_body(failure.code, failure.message, details),
            "meta": {"request_id": who.request_id, **meta},
        },
    )


@router.get(
    f"{API_PREFIX}/restarts/<restart_id>",
    summary="Get a restart: progress, phase history and result",
    tags=["Restarts"],
    responses=documented(200, "The restart", RestartResponse, read=True),
)
def get_restart(restart_id: Annotated[str, Path(pattern=RESTART_ID)], who: Reader, deps: Adapters) -> Response[str]:
    return ok(restart_view(restart_api.get_restart(deps, who.tenant_id, restart_id)), who.request_id)


@router.get(
    f"{API_PREFIX}/clusters/<cluster_id>/restarts",
    summary="Restart history of a cluster, newest first",
    tags=["Restarts"],
    responses=documented(200, "A page of restarts", RestartListResponse, read=True),
)
def list_restarts(
    cluster_id: Annotated[str, Path(pattern=CLUSTER_ID)],
    who: Reader,
    deps: Adapters,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    next_token: Annotated[str | None, Query(max_length=2048)] = None,
) -> Response[str]:
    records, token = restart_api.list_restarts(deps, who.tenant_id, cluster_id, limit=limit, cursor=next_token)
    page = {"restarts": [restart_view(r).model_dump(mode="json") for r in records], "next_token": token}
    return ok(page, who.request_id)


@router.post(
    f"{API_PREFIX}/restarts/<restart_id>/cancel",
    summary="Cancel a restart",
    description="The execution stops at its next step, rolls back what it changed and releases the cluster lock.",
    tags=["Restarts"],
    responses=documented(202, "Cancellation requested", RestartResponse),
)
def cancel_restart(
    restart_id: Annotated[str, Path(pattern=RESTART_ID)], who: Restarter, deps: Adapters
) -> Response[str]:
    record = restart_api.cancel_restart(deps, who.tenant_id, restart_id, who.requested_by)
    return ok(restart_view(record), who.request_id, status=202)
