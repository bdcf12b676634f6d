"""Step Functions on moto for the embedded AWS: Lambda tasks run our handlers in-process, and
Wait states and retry backoff run on the engine's scaled clock.

The patches read the active engine's Lambda dispatcher and clock (``_runtime``): the engine sets
them at start. Without an active clock, waits and backoff take real time as moto ships them.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from restarter.services.ended_executions import CLEANUP_SUFFIX

from . import _runtime
from .registry import replaces, wraps

_retrying = threading.local()


def clock_key(execution_name: str) -> str:
    """A restart's cleanup-only execution (`<restart id>-cleanup`) runs on the restart's clock."""
    return execution_name.removesuffix(CLEANUP_SUFFIX)


def _execution_name(env: Any) -> str | None:
    """The clock key of what waits: the execution, or one iteration of its Map (iterations
    wait side by side; one key for all would run the execution's clock N times too fast)."""
    try:
        data = env.states.context_object.context_object_data
        name = clock_key(str(data["Execution"]["Name"]))
    except (AttributeError, KeyError, TypeError):
        return None
    try:
        return f"{name}#item{data['Map']['Item']['Index']}"
    except (KeyError, TypeError):
        return name


def invoke(self: Any, function_name: str, qualifier: Any, body: Any, headers: Any, response_headers: Any) -> bytes:
    """moto's Docker-less Lambda invoke: run the handler in-process, report its exception as
    Lambda's Unhandled function error (so the ASL's Retry / Catch see the error name)."""
    functions, clock = _runtime.active_functions(), _runtime.active_clock()
    if functions is None or clock is None:
        raise RuntimeError("no local engine is running")
    event = json.loads(body) if body else {}
    restart_id = event.get("restart_id") if isinstance(event, dict) else None
    with clock.invocation(), clock.bound_to(restart_id):
        result, errored = functions.invoke(function_name, event)
    if errored:
        response_headers["x-amz-function-error"] = "Unhandled"
    return json.dumps(result, default=str).encode()


def _wrap_wait_interval(original: Any) -> Any:
    def scaled_wait(self: Any, env: Any, wait_seconds: int) -> None:
        clock = _runtime.active_clock()
        if clock is None:
            original(self, env, wait_seconds)
            return
        if wait_seconds <= 0:
            return
        real = wait_seconds / clock.scale
        env.program_state_event.wait(real)
        if env.is_running():
            clock.advance(_execution_name(env), wait_seconds - real)

    return scaled_wait


def _wrap_retrier_eval(original: Any) -> Any:
    def retrier_eval(self: Any, env: Any) -> None:
        _retrying.key = _execution_name(env)
        try:
            original(self, env)
        finally:
            _retrying.key = None

    return retrier_eval


class ScaledTime:
    """Stands in for the ``time`` module in moto's retrier: ``sleep`` runs on the active clock
    (keyed by the execution ``RetrierDecl._eval_body`` is retrying); the rest is ``time``."""

    @staticmethod
    def sleep(seconds: float) -> None:
        clock = _runtime.active_clock()
        if clock is None:
            time.sleep(seconds)
        else:
            clock.sleep(getattr(_retrying, "key", None), seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def _wrap_start_execution(original: Any) -> Any:
    def start_execution(self: Any, state_machine_arn: str, name: Any = None, *args: Any, **kwargs: Any) -> Any:
        clock = _runtime.active_clock()
        if clock is not None and name:
            clock.begin(clock_key(str(name)))
        return original(self, state_machine_arn, name, *args, **kwargs)

    return start_execution


def _wrap_terminated(original: Any) -> Any:
    def terminated(self: Any) -> None:
        original(self)
        listener = _runtime.active_execution_listener()
        execution = getattr(self, "execution", None)
        if listener is None or execution is None or execution.exec_status is None:
            return
        listener(
            {
                "executionArn": execution.exec_arn,
                "stateMachineArn": execution.state_machine_arn,
                "name": execution.name,
                "status": execution.exec_status.value,
                "error": execution.error,
                "cause": execution.cause,
            }
        )

    return terminated


_RETRIER = "moto.stepfunctions.parser.asl.component.common.retry.retrier_decl"

PATCHES = (
    replaces(
        "stepfunctions.lambda_in_process",
        "moto.awslambda_simple.models",
        "LambdaSimpleBackend",
        "invoke",
        "Lambda tasks run the real handlers in-process (moto without Docker answers a canned string)",
        invoke,
    ),
    wraps(
        "stepfunctions.scaled_wait",
        "moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function",
        "WaitFunction",
        "_wait_interval",
        "a Wait state sleeps 1/scale of its length and moves its execution's clock by all of it",
        _wrap_wait_interval,
    ),
    wraps(
        "stepfunctions.retry_clock_key",
        _RETRIER,
        "RetrierDecl",
        "_eval_body",
        "tell the scaled retry backoff (below) which execution's clock it runs on",
        _wrap_retrier_eval,
    ),
    replaces(
        "stepfunctions.scaled_retry_backoff",
        _RETRIER,
        "",
        "time",
        "retry backoff sleeps 1/scale of its length and moves the execution's clock by all of it",
        ScaledTime(),
    ),
    wraps(
        "stepfunctions.execution_status_change",
        "moto.stepfunctions.parser.backend.execution",
        "BaseExecutionWorkerCommunication",
        "terminated",
        "an execution that ends tells the engine, which delivers EventBridge's status change as the rule would",
        _wrap_terminated,
    ),
    wraps(
        "stepfunctions.clock_starts_with_execution",
        "moto.stepfunctions.parser.models",
        "StepFunctionsParserBackend",
        "start_execution",
        "a restart's clock starts when its starter first read the time, not at StartExecution",
        _wrap_start_execution,
    ),
)
