"""Domain errors.

Every failure the product reports has a stable `code` (the seed's error envelope) and a
`details` dict that is safe to show: no secrets, no stack traces. The class name doubles as
the error name Step Functions sees when a task raises it, so `Retry`/`Catch` in the ASL name
these classes.
"""

from __future__ import annotations

from typing import Any


class RestarterError(Exception):
    """Base of every error the product reports on purpose."""

    code = "INTERNAL"
    http_status = 500

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_envelope(self) -> dict[str, Any]:
        return {
            "success": False,
            "error": {"code": self.code, "message": self.message, "details": self.details},
        }


class RequestValidationError(RestarterError):
    code = "VALIDATION_ERROR"
    http_status = 400


class InvalidStateError(RestarterError):
    code = "INVALID_STATE"
    http_status = 409


class NotFoundError(RestarterError):
    code = "NOT_FOUND"
    http_status = 404


class ConflictError(RestarterError):
    code = "CONFLICT"
    http_status = 409


class UnsupportedChangeError(RequestValidationError):
    """A configuration change this product refuses before touching anything (shrink, region)."""


class TransientProviderError(RestarterError):
    """Throttling, request limits, SSM delivery hiccups: safe to retry with backoff."""

    code = "PROVIDER_BUSY"
    http_status = 503


class ProviderError(RestarterError):
    """The cloud refused an operation for a reason a retry will not fix."""

    code = "PROVIDER_ERROR"
    http_status = 502


class InsufficientCapacityError(ProviderError):
    """EC2 has no capacity for the instance type right now (`InsufficientInstanceCapacity`): the
    most common failure of a stop/start of a scarce GPU type. Not retried blindly by the state
    machine: the phase waits for capacity with its own backoff, within the restart's deadline."""

    code = "INSUFFICIENT_CAPACITY"
    http_status = 503


class PhaseFailedError(RestarterError):
    """A phase ran and its outcome is a failure (a health check failed, a command failed)."""

    code = "PHASE_FAILED"
    http_status = 500


class RestartTimedOutError(RestarterError):
    """The restart passed its `timeout_minutes` deadline."""

    code = "TIMED_OUT"
    http_status = 504


class RestartCancelledError(RestarterError):
    """Someone cancelled the restart; the execution stops going forward and cleans up."""

    code = "CANCELLED"
    http_status = 409
