"""What the patched moto consults, process-wide: the simulated fleet's state, and the engine's
Lambda dispatcher and scaled clock (the Step Functions shims)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

from .state import SimulatedAgentState


class LambdaDispatcher(Protocol):
    """Runs a Lambda function's handler in-process (the engine's ``restarter_local.lambdas.FunctionRegistry``)."""

    def invoke(self, function_name: str, event: Any) -> tuple[Any, bool]:
        """(result, errored) like Lambda's Unhandled function error."""
        ...


class SimulatedClock(Protocol):
    """The engine's ``restarter_local.clock.ScaledClock``: simulated time per restart, ``scale`` times real time."""

    scale: float

    def now(self) -> datetime: ...
    def invocation(self) -> AbstractContextManager[None]: ...
    def bound_to(self, key: str | None) -> AbstractContextManager[None]: ...
    def begin(self, key: str) -> None: ...
    def advance(self, key: str | None, seconds: float) -> None: ...
    def sleep(self, key: str | None, seconds: float) -> None: ...


_active: list[SimulatedAgentState | None] = [None]
_functions: list[LambdaDispatcher | None] = [None]
_clock: list[SimulatedClock | None] = [None]
# called with the detail of EventBridge's "Step Functions Execution Status Change" when an execution ends
ExecutionListener = Callable[[dict[str, Any]], None]
_execution_listener: list[ExecutionListener | None] = [None]


def active_state() -> SimulatedAgentState | None:
    """The state the extensions consult (None: moto behaves as shipped where we patched it)."""
    return _active[0]


def set_active_state(state: SimulatedAgentState | None) -> None:
    """Make ``state`` the one the patched moto consults (None: patched paths behave as shipped)."""
    _active[0] = state


def active_functions() -> LambdaDispatcher | None:
    """Where moto's Lambda invocations go (None: no engine is running)."""
    return _functions[0]


def set_active_functions(functions: LambdaDispatcher | None) -> None:
    _functions[0] = functions


def active_clock() -> SimulatedClock | None:
    """The clock Wait states and retry backoff run on (None: real time, as moto ships)."""
    return _clock[0]


def set_active_clock(clock: SimulatedClock | None) -> None:
    _clock[0] = clock


def active_execution_listener() -> ExecutionListener | None:
    """Who hears that an execution ended (None: nobody, as moto ships)."""
    return _execution_listener[0]


def set_execution_listener(listener: ExecutionListener | None) -> None:
    _execution_listener[0] = listener
