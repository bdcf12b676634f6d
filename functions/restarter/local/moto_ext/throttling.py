"""Generic API throttling: a wrapper around moto's ``BaseResponse.call_action``.

Every moto service dispatches through ``BaseResponse.call_action`` (DynamoDB and Auto Scaling
override it but call ``super()``), after ``setup_class`` has parsed the request, so the service
name and the action are known there and any action of any service can be throttled.
"""

from __future__ import annotations

from typing import Any

from moto.core.exceptions import ServiceException
from moto.core.responses import ActionResult, BaseResponse

from . import _runtime
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


def install() -> None:
    original = BaseResponse.call_action

    def call_action(self: BaseResponse) -> Any:
        state = _runtime.active_state()
        if state is not None:
            service = (self.service_name or "").lower()
            try:
                action = self._get_action() or ""
            except Exception:
                action = ""
            refusal = state.record_call(service, action)
            if refusal is not None:
                return _refuse(self, service, refusal)
        return original(self)

    call_action.__wrapped__ = original  # type: ignore[attr-defined]
    _runtime.patch(BaseResponse, "call_action", call_action)
