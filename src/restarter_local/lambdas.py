"""Lambda on the embedded AWS: moto's invocations (from Step Functions, or a schedule's firing)
run our handlers in-process, with a context shaped like the Lambda runtime's."""

from __future__ import annotations

import threading
import time
import uuid
from importlib import import_module
from typing import Any

from restarter_local.account import ACCOUNT, REGION
from restarter_local.lambda_output import lambda_stdout_to_stderr
from restarter_local.template import FunctionSpec


class LocalLambdaContext:
    """What a handler reads from the Lambda context (names, ARN, remaining time), for local runs."""

    def __init__(self, function_name: str) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function_name}"
        self.memory_limit_in_mb = 256
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + 120

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class FunctionRegistry:
    """Dispatches moto's Lambda invocations to our handlers, by function name or ARN."""

    def __init__(self, specs: dict[str, FunctionSpec]) -> None:
        self.specs = specs
        self.invocations: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def handler_for(self, function_name: str) -> Any:
        name = function_name.split(":function:")[-1].split(":")[0]
        spec = self.specs[name]
        module_name, _, attribute = spec.handler.rpartition(".")
        return name, getattr(import_module(module_name), attribute)

    def invoke(self, function_name: str, event: Any) -> tuple[Any, bool]:
        """Run the handler; returns (result, errored) like Lambda's Unhandled function error."""
        name, handler = self.handler_for(function_name)
        with self._lock:
            self.invocations.append((name, event))
        try:
            with lambda_stdout_to_stderr():  # what the function prints is its log, not our output
                return handler(event, LocalLambdaContext(name)), False
        except Exception as exc:  # the Lambda runtime reports any exception the same way
            return {"errorType": type(exc).__name__, "errorMessage": str(exc)}, True
