"""Starting and stopping restart executions."""

from __future__ import annotations

import json
from typing import Any

from restarter.adapters.aws_errors import call


class ExecutionStarter:
    def __init__(self, client: Any, state_machine_arn: str) -> None:
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

    def stop(self, execution_arn: str, cause: str) -> None:
        call(
            "states:StopExecution",
            lambda: self._client.stop_execution(executionArn=execution_arn, error="Cancelled", cause=cause),
        )
