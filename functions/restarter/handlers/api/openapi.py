"""The OpenAPI document: what every operation really answers, and the bearer scheme.

With validation on, Powertools documents a 422 `HTTPValidationError` on every operation and
offers no switch to leave it out; this API answers every invalid request 400
`VALIDATION_ERROR` in the error envelope, so `DocumentedResolver` takes the 422 (and its
schemas) out of the document it builds, the Swagger UI's included. Public Powertools API only:
the resolver's `get_openapi_schema` and the OpenAPI models it returns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver

from restarter.handlers.api.body_guard import MAX_BODY_BYTES
from restarter.handlers.api.models import ErrorEnvelope

if TYPE_CHECKING:  # the OpenAPI models load when the document is built, not at cold start
    from aws_lambda_powertools.event_handler.openapi.models import OpenAPI

OPENAPI_INFO: dict[str, Any] = {
    "title": "restarter — Restart Cluster API",
    "version": "1.0.0",
    "description": "Restart GPU clusters safely. Compatible with the Restart Cluster API contract.",
}
_OPERATIONS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


class DocumentedResolver(APIGatewayRestResolver):
    """The REST resolver, documenting what this API really answers (no Powertools 422)."""

    def get_openapi_schema(self, *args: Any, **kwargs: Any) -> OpenAPI:  # type: ignore[override]
        return without_validation_422(super().get_openapi_schema(*args, **kwargs))


def without_validation_422(schema: OpenAPI) -> OpenAPI:
    for item in (schema.paths or {}).values():
        for method in _OPERATIONS:
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


def security() -> dict[str, Any]:
    """`Authorization: Bearer <key>` on every operation, so Swagger UI's "Authorize" sends the key."""
    from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer

    return {
        "security_schemes": {"bearerAuth": HTTPBearer(scheme="bearer", bearerFormat="API key")},
        "security": [{"bearerAuth": []}],
    }


# ------------------------------------------------------------------ the documented answers


def envelope_answer(description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"model": ErrorEnvelope}}, **extra}


ERRORS: dict[int, Any] = {
    400: envelope_answer(
        "`VALIDATION_ERROR`: an invalid body, path, query or header; `details.errors` names each field"
    ),
    401: envelope_answer("`UNAUTHORIZED`: missing or invalid API key"),
    403: envelope_answer("`FORBIDDEN`: the key lacks the scope"),
    404: envelope_answer("`NOT_FOUND`: no such resource (or not one of your tenant's)"),
    405: envelope_answer("`METHOD_NOT_ALLOWED`: `details.allowed` lists the methods of the path"),
    429: envelope_answer("`RATE_LIMITED`: too many requests for this key"),
    500: envelope_answer("`INTERNAL`: an unexpected error"),
    502: envelope_answer("`INTERNAL`: a dependency failed"),
    503: envelope_answer(
        "`INTERNAL`: a dependency is busy; retry after `Retry-After` seconds",
        headers={"Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}},
    ),
}
CONFLICT_ERRORS: dict[int, Any] = {
    409: envelope_answer("`INVALID_STATE` or `CONFLICT` (an `Idempotency-Key` reused with another request)"),
}
BODY_ERRORS: dict[int, Any] = {
    413: envelope_answer(f"`VALIDATION_ERROR`: the body is larger than {MAX_BODY_BYTES} bytes"),
    415: envelope_answer("`VALIDATION_ERROR`: the body is not `application/json`"),
}


def documented(
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
