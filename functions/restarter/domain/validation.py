"""Turning an untrusted request body into a `RestartRequest`, or one clear validation error.

Errors name each offending field by its path and never echo the submitted value: a value
under `environment_updates` may be a secret.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from restarter.domain.errors import RequestValidationError
from restarter.domain.models import RestartRequest


def field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


def validation_details(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": field_path(tuple(err["loc"])), "message": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


def parse_restart_request(payload: Any) -> RestartRequest:
    if isinstance(payload, RestartRequest):
        return check_request_consistency(payload)
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise RequestValidationError(
            "The request body must be a JSON object",
            {"errors": [{"field": "body", "message": "expected an object", "type": "model_type"}]},
        )
    try:
        request = RestartRequest.model_validate(payload)
    except ValidationError as exc:
        errors = validation_details(exc)
        fields = ", ".join(sorted({e["field"] for e in errors}))
        raise RequestValidationError(f"Invalid restart request: {fields}", {"errors": errors}) from exc
    return check_request_consistency(request)


def check_request_consistency(request: RestartRequest) -> RestartRequest:
    """Rules between fields: a graceful stop must fit in the restart's timeout."""
    if not request.force and request.grace_period_minutes >= request.timeout_minutes:
        message = (
            f"grace_period_minutes ({request.grace_period_minutes}) must be less than timeout_minutes "
            f"({request.timeout_minutes}) for a graceful restart: the stop alone would use the whole timeout"
        )
        raise RequestValidationError(
            "Invalid restart request: grace_period_minutes",
            {"errors": [{"field": "grace_period_minutes", "message": message, "type": "less_than_timeout"}]},
        )
    return request
