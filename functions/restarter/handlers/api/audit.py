"""The API's audit trail: every mutation and every refusal, in the caller's tenant trail; a
refused restart also in its cluster's trail.

Headers, query and body are never written (keys, tokens, environment values).
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from restarter.adapters.authorizer_context import principal_from_authorizer_context
from restarter.domain.auth import Principal
from restarter.domain.errors import RestarterError
from restarter.handlers.api.depends import principal_of
from restarter.handlers.api.models import API_PREFIX
from restarter.observability import logger
from restarter.services import restart_api
from restarter.wiring import get_dependencies

_READS = ("GET", "HEAD", "OPTIONS")


def record_refusal(event: APIGatewayProxyEvent, code: str, message: str) -> None:
    """A restart refused before the intake saw it (body validation, scope) goes to the cluster's
    trail too, if the cluster is the caller's (`record_request` writes every refusal to the
    tenant's trail)."""
    if event.http_method != "POST" or not event.path.endswith("/restart"):
        return
    try:
        principal = principal_of(event)
    except RestarterError:
        return
    cluster_id = event.path.removeprefix(f"{API_PREFIX}/clusters/").removesuffix("/restart")
    restart_api.record_refused_restart(
        get_dependencies(), cluster_id, principal.tenant_id, f"{principal.tenant_id}/{principal.key_id}", code, message
    )


def record_request(event: dict[str, Any], response: dict[str, Any]) -> None:
    """The tenant's request trail: every request that changes something (restart, cancel,
    rollout, schedule), accepted or refused, and every refusal or failure of any request, with
    requester, tenant, method, path, outcome and status. Reads that succeed are not written: they
    change nothing, and auditing them would double the writes of every poll."""
    method = str(event.get("httpMethod") or "").upper()
    status = int(response.get("statusCode") or 500)
    if method in _READS and status < 400:
        return
    try:
        context = event.get("requestContext") or {}
        try:
            principal: Principal | None = principal_from_authorizer_context(context.get("authorizer"))
        except RestarterError:
            principal = None
        restart_api.record_api_request(
            get_dependencies(),
            tenant_id=principal.tenant_id if principal else None,
            requested_by=f"{principal.tenant_id}/{principal.key_id}" if principal else "anonymous",
            method=method,
            path=str(event.get("path") or ""),
            status=status,
            error_code=_error_code(response) if status >= 400 else None,
            request_id=str(context.get("requestId") or ""),
        )
    except Exception:  # the answer stands; a lost entry is logged
        logger.exception("audit entry not written", method=method, status=status)


def _error_code(response: dict[str, Any]) -> str | None:
    try:
        code = json.loads(response.get("body") or "{}").get("error", {}).get("code")
    except (ValueError, AttributeError):
        return None
    return None if code is None else str(code)
