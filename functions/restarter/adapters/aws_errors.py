"""Turning SDK exceptions into domain errors, in one place."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from restarter.domain.errors import InsufficientCapacityError, ProviderError, TransientProviderError

T = TypeVar("T")

TRANSIENT_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestThrottled",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        # the 500s the service models declare: DynamoDB and SSM, Scheduler, CloudWatch
        "InternalServerError",
        "InternalServerException",
        "InternalServiceError",
        "ExecutionLimitExceeded",  # Step Functions: too many running executions for now
        "InvocationDoesNotExist",  # SSM: the invocation is not registered yet
    }
)
# EC2 has no capacity for the type (StartInstances of a scarce GPU type): the phase waits for it
CAPACITY_CODES = frozenset({"InsufficientInstanceCapacity", "InsufficientHostCapacity", "InsufficientCapacity"})


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))


@contextmanager
def translated(operation: str) -> Iterator[None]:
    """Raise `TransientProviderError` for what a retry may fix, `ProviderError` for the rest."""
    try:
        yield
    except ClientError as exc:
        code = error_code(exc)
        message = str(exc.response.get("Error", {}).get("Message", ""))
        details = {"operation": operation, "aws_error_code": code}
        if code in TRANSIENT_CODES:
            raise TransientProviderError(f"{operation} was throttled or unavailable: {code}", details) from exc
        if code in CAPACITY_CODES:
            raise InsufficientCapacityError(f"{operation}: EC2 has no capacity for now: {message}", details) from exc
        raise ProviderError(f"{operation} failed: {code}: {message}", details) from exc
    except BotoConnectionError as exc:
        raise TransientProviderError(f"{operation}: connection problem", {"operation": operation}) from exc
    except BotoCoreError as exc:
        raise ProviderError(f"{operation} failed: {type(exc).__name__}", {"operation": operation}) from exc


def call(operation: str, fn: Callable[[], T]) -> T:
    with translated(operation):
        return fn()
