"""The seed's envelopes: `{"success": true, "data", "meta"}` and `{"success": false, "error"}`."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler import Response

JSON_MEDIA_TYPE = "application/json"


def json_answer(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> Response[str]:
    return Response(
        status_code=status, content_type=JSON_MEDIA_TYPE, body=json.dumps(payload, default=str), headers=headers
    )


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "details": details or {}}


def error_answer(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[str]:
    return json_answer(status, {"success": False, "error": error_body(code, message, details)}, headers)


def ok(data: Any, request_id: str, status: int = 200, **meta: Any) -> Response[str]:
    body = data.model_dump(mode="json") if hasattr(data, "model_dump") else data
    return json_answer(status, {"success": True, "data": body, "meta": {"request_id": request_id, **meta}})


def proxy_error(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """An error envelope as a raw proxy response, for answers given outside the resolver."""
    return {
        "statusCode": status,
        "headers": {"Content-Type": JSON_MEDIA_TYPE},
        "body": json.dumps({"success": False, "error": error_body(code, message, details)}),
        "isBase64Encoded": False,
    }
