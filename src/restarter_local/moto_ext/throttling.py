"""Generic API throttling: a wrapper around moto's ``BaseResponse.call_action``.

Every moto service dispatches through ``BaseResponse.call_action`` (DynamoDB and Auto Scaling
override it but call ``super()``), after ``setup_class`` has parsed the request, so the service
name and the action are known there and any action of any service can be throttled.
"""

from __future__ import annotations

import json
from typing import Any

from moto.core.exceptions import ServiceException
from moto.core.responses import ActionResult, BaseResponse

from . import _runtime
from .registry import wraps
from .state import ThrottleRefusal

# service -> (error code, message, HTTP status) of the real throttling error.
THROTTLING_ERRORS: dict[str, tuple[str, str, int]] = {
    "ec2": ("RequestLimitExceeded", "Request limit exceeded.", 503),
    "dynamodb": ("ThrottlingException", "Rate of requests exceeds the allowed throughput.", 400),
}
DEFAULT_THROTTLING_ERROR = ("ThrottlingException", "Rate exceeded", 400)


class _ThrottlingError(ServiceException):
    pass


def _refuse(response: BaseResponse, service: str, refusal: ThrottleRefusal) -> Any:
    code, message, status = THROTTLING_ERRORS.get(service, DEFAULT_THROTTLING_ERROR)
    if refusal.error_code:
        code = refusal.error_code
    _status, headers, body = response.serialized(ActionResult(_ThrottlingError(code, message)))
    headers = dict(headers)
    headers["status"] = str(status)
    return status, headers, body


def _request_params(response: BaseResponse) -> dict[str, Any]:
    """The request's parameters, best effort: parsed (EC2 and other auto-parsed services), the
    JSON body (JSON protocols), or the flattened query string."""
    params = getattr(response, "params", None)
    if params:
        original = getattr(params, "original_dict", None)
        return dict(original() if callable(original) else params)
    body = getattr(response, "body", None)
    if isinstance(body, str | bytes) and body[:1] in ("{", b"{"):
        try:
            loaded = json.loads(body)
        except ValueError:
            loaded = None
        if isinstance(loaded, dict):
            return loaded
    querystring = getattr(response, "querystring", None) or {}
    return {
        str(key): value[0] if isinstance(value, list) and len(value) == 1 else value
        for key, value in querystring.items()
        if key not in ("Action", "Version")
    }


def _wrap_call_action(original: Any) -> Any:
    def call_action(self: BaseResponse) -> Any:
        state = _runtime.active_state()
        if state is not None:
            service = (self.service_name or "").lower()
            try:
                action = self._get_action() or ""
            except Exception:
                action = ""
            refusal = state.record_call(service, action, _request_params(self))
            if refusal is not None:
                return _refuse(self, service, refusal)
        return original(self)

    call_action.__wrapped__ = original  # type: ignore[attr-defined]
    return call_action


PATCHES = (
    wraps(
        "throttling.call_action",
        "moto.core.responses",
        "BaseResponse",
        "call_action",
        "count every API call and refuse it with the service's throttling error when asked",
        _wrap_call_action,
    ),
)
