"""One map from whatever a request raised to the error envelope it answers, 4xx or 5xx.

Domain errors keep their code; failures of a dependency answer the stable `INTERNAL` with a
generic message (503 with `Retry-After` when a retry may help). What AWS said is logged with
structured keys, never returned: it can name resources, accounts and policies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools.event_handler.exceptions import NotFoundError as NoRouteError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestUnsupportedContentType
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError as OpenApiValidationError
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)

from restarter.domain.auth import ForbiddenError
from restarter.domain.errors import ProviderError, RestarterError, TransientProviderError
from restarter.domain.validation import field_path
from restarter.handlers.api.parameters import IDEMPOTENCY_HEADER, IDEMPOTENCY_KEY_RULE
from restarter.handlers.api.route_table import RouteTable
from restarter.observability import logger

# What a client may be told when a dependency (AWS) is throttled or unavailable.
RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True)
class ErrorAnswer:
    status: int
    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] | None = None
    # how the cluster's trail names the refusal too, for a restart refused before the intake saw it
    refusal: str | None = None


@dataclass(frozen=True)
class FailedRequest:
    """What an answer may name about the request that failed."""

    event: APIGatewayProxyEvent
    routes: RouteTable


def answer_for(exc: Exception, request: FailedRequest) -> ErrorAnswer:
    """The answer of the most specific exception class in the map, as Powertools picks handlers."""
    for cls in type(exc).__mro__:
        answer = _ANSWERS.get(cls)
        if answer is not None:
            return answer(exc, request)
    return _unexpected(exc, request)


def _restarter_error(exc: RestarterError, request: FailedRequest) -> ErrorAnswer:
    if isinstance(exc, TransientProviderError):
        logger.warning("dependency busy", error_code=exc.code, error_detail=exc.message, dependency=exc.details)
        return ErrorAnswer(
            503,
            "INTERNAL",
            "A dependency is busy, retry",
            {"retry_after_seconds": RETRY_AFTER_SECONDS},
            {"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    if isinstance(exc, ProviderError):
        logger.error("dependency failed", error_code=exc.code, error_detail=exc.message, dependency=exc.details)
        return ErrorAnswer(502, "INTERNAL", "A dependency failed")
    if exc.http_status >= 500:
        logger.error("internal error", error_code=exc.code, error_detail=exc.message, details=exc.details)
        return ErrorAnswer(500, "INTERNAL", "Internal error")
    # a missing scope is refused before the intake, which audits its own refusals
    refusal = exc.message if isinstance(exc, ForbiddenError) else None
    return ErrorAnswer(exc.http_status, exc.code, exc.message, exc.details, refusal=refusal)


def _validation_error(exc: OpenApiValidationError, request: FailedRequest) -> ErrorAnswer:
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
    message = f"Invalid request: {fields}"
    return ErrorAnswer(400, "VALIDATION_ERROR", message, {"errors": errors}, refusal=message)


def _idempotency_mismatch(exc: IdempotencyValidationError, request: FailedRequest) -> ErrorAnswer:
    return ErrorAnswer(
        409,
        "CONFLICT",
        "This Idempotency-Key was used with a different request",
        {"header": IDEMPOTENCY_HEADER, "suggestion": "Use a new key for a different request"},
        refusal="Idempotency-Key reused with a different request",
    )


def _idempotency_in_progress(exc: IdempotencyAlreadyInProgressError, request: FailedRequest) -> ErrorAnswer:
    return ErrorAnswer(
        409, "CONFLICT", "A request with this Idempotency-Key is in progress", {"header": IDEMPOTENCY_HEADER}
    )


def _unsupported_content_type(exc: RequestUnsupportedContentType, request: FailedRequest) -> ErrorAnswer:
    """Normally refused before routing (`body_guard`); kept so it can never be a 500."""
    content_type = str(request.event.headers.get("content-type") or "")
    return ErrorAnswer(
        415,
        "VALIDATION_ERROR",
        "Content-Type must be application/json",
        {"content_type": content_type[:100]},
        refusal="Unsupported content type",
    )


def _no_route(exc: NoRouteError, request: FailedRequest) -> ErrorAnswer:
    path, method = request.event.path, request.event.http_method
    allowed = request.routes.allowed_methods(path)
    if allowed:
        return ErrorAnswer(405, "METHOD_NOT_ALLOWED", f"{method} is not allowed on this path", {"allowed": allowed})
    return ErrorAnswer(404, "NOT_FOUND", "No such resource", {"path": path, "method": method})


def _unexpected(exc: Exception, request: FailedRequest) -> ErrorAnswer:
    logger.exception("unhandled error", error_type=type(exc).__name__)
    return ErrorAnswer(500, "INTERNAL", "Internal error")


_ANSWERS: dict[type[Exception], Callable[[Any, FailedRequest], ErrorAnswer]] = {
    RestarterError: _restarter_error,
    OpenApiValidationError: _validation_error,
    IdempotencyValidationError: _idempotency_mismatch,
    IdempotencyAlreadyInProgressError: _idempotency_in_progress,
    RequestUnsupportedContentType: _unsupported_content_type,
    NoRouteError: _no_route,
    Exception: _unexpected,
}
