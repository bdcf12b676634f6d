"""Starting, following and stopping the executions of one state machine."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from restarter.adapters.aws_errors import call
from restarter.domain.errors import ProviderError

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient

_UNKNOWN_EXECUTION_CODES = frozenset({"ExecutionDoesNotExist", "InvalidArn"})


class ExecutionStarter:
    def __init__(self, client: SFNClient, state_machine_arn: str) -> None:
        self._client = client
        self._arn = state_machine_arn

    def execution_arn(self, name: str) -> str:
        """The ARN a standard execution with this name gets, known before it starts."""
        prefix, _, machine = self._arn.rpartition(":stateMachine:")
        return f"{prefix}:execution:{machine}:{name}"

    def start(self, name: str, payload: dict[str, Any]) -> str:
        response = call(
            "states:StartExecution",
            lambda: self._client.start_execution(stateMachineArn=self._arn, name=name, input=json.dumps(payload)),
        )
        return str(response["executionArn"])

    def start_once(self, name: str, payload: dict[str, Any]) -> str:
        """Start, or find the execution a first try started under this name."""
        try:
            return self.start(name, payload)
        except ProviderError as exc:
            if exc.details.get("aws_error_code") != "ExecutionAlreadyExists":
                raise
            return self.execution_arn(name)

    def status(self, execution_arn: str) -> str:
        """RUNNING, SUCCEEDED, FAILED, TIMED_OUT, ABORTED (or PENDING_REDRIVE)."""
        response = call("states:DescribeExecution", lambda: self._client.describe_execution(executionArn=execution_arn))
        return str(response["status"])

    def is_running(self, execution_arn: str) -> bool:
        """Whether the execution runs; one Step Functions does not know runs nothing. Other errors
        raise: a throttled answer is no proof that nothing runs."""
        try:
            return self.status(execution_arn) == "RUNNING"
        except ProviderError as exc:
            if exc.details.get("aws_error_code") in _UNKNOWN_EXECUTION_CODES:
                return False
            raise

    def stop(self, execution_arn: str, cause: str) -> None:
        call(
            "states:StopExecution",
            lambda: self._client.stop_execution(executionArn=execution_arn, error="Cancelled", cause=cause),
        )
