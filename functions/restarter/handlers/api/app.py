"""ApiFunction's entry point: the REST resolver, its routers, and what wraps every request.

A request goes: body guard (`body_guard`) → Powertools (validation, `Depends`, the route) →
on any failure the one error map (`errors`) → the request audit (`audit`). Every failure,
whatever raised it, leaves as `{"success": false, "error": {"code", "message", "details"}}`.
"""

from __future__ import annotations

import threading
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from restarter.handlers.api import audit
from restarter.handlers.api.body_guard import json_body, refuse_unreadable_body
from restarter.handlers.api.envelopes import JSON_MEDIA_TYPE, error_answer, proxy_error
from restarter.handlers.api.errors import FailedRequest, answer_for
from restarter.handlers.api.models import API_PREFIX
from restarter.handlers.api.openapi import OPENAPI_INFO, DocumentedResolver, security
from restarter.handlers.api.route_table import RouteTable
from restarter.handlers.api.routes import clusters, health, restarts, rollouts, schedules
from restarter.observability import logger, metrics

OPENAPI_PATH = f"{API_PREFIX}/openapi.json"
DOCS_PATH = f"{API_PREFIX}/docs"

app = DocumentedResolver(enable_validation=True, json_body_deserializer=json_body)
ROUTES = RouteTable()
"""Every route the resolver serves: the routers' and the two documentation routes below."""

for router in (restarts.router, clusters.router, health.router, rollouts.router, schedules.router):
    app.include_router(router)
    ROUTES.extend(router.table)


@app.exception_handler(Exception)
def answer_error(exc: Exception) -> Response[str]:
    """Whatever a route (or Powertools) raised, and no route matching (`app.not_found`)."""
    event = app.current_event
    answer = answer_for(exc, FailedRequest(event, ROUTES))
    if answer.refusal is not None:
        audit.record_refusal(event, answer.code, answer.refusal)
    return error_answer(answer.status, answer.code, answer.message, answer.details, answer.headers)


app.not_found(answer_error)


@app.get(OPENAPI_PATH, include_in_schema=False)
def openapi_json() -> Response[str]:
    return Response(status_code=200, content_type=JSON_MEDIA_TYPE, body=openapi_document())


def openapi_document() -> str:
    return app.get_openapi_json_schema(**OPENAPI_INFO, **security())


ROUTES.declare("GET", OPENAPI_PATH)
ROUTES.declare("GET", DOCS_PATH)
_swagger_lock = threading.Lock()
_swagger_enabled = threading.Event()


def enable_swagger_once(event: dict[str, Any]) -> None:
    """Swagger UI's route is added on the first request for it: `enable_swagger` loads
    Powertools' OpenAPI models (~100 ms of a cold start), which no other request needs. The
    path is the one Powertools matches (the event's `path`); until then `DOCS_PATH` is declared
    in `ROUTES`, so a wrong method still answers 405."""
    if _swagger_enabled.is_set() or str(event.get("path") or "").rstrip("/") != DOCS_PATH:
        return
    with _swagger_lock:
        if not _swagger_enabled.is_set():
            app.enable_swagger(path=DOCS_PATH, **OPENAPI_INFO, **security(), persist_authorization=True)
            _swagger_enabled.set()


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True, log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        enable_swagger_once(event)
        response = refuse_unreadable_body(event, ROUTES) or app.resolve(event, context)
    except Exception:  # the envelope, never a traceback, whatever failed
        logger.exception("unhandled error")
        response = proxy_error(500, "INTERNAL", "Internal error")
    audit.record_request(event, response)
    return response
