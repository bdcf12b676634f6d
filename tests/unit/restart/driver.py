"""Runs a restart's steps the way statemachine/restart.asl.json does, against the fakes.

The contract with the state machine: `advance` for each phase of the plan until `done`, a Wait
of `wait_seconds` between polls (here: the fixed clock moves), `Retry` of transient errors and
lost record races with the same attempt, a `Catch` of anything else into `cleanup` (polled the
same way), and `abandon` when cleanup itself fails.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from restarter.domain.errors import ConflictError, TransientProviderError
from restarter.domain.planning import INTAKE_STEPS
from restarter.services.restart.runner import RestartRunner, StepResult
from tests.unit.fakes import FakeWorld

RETRIED = (TransientProviderError, ConflictError)
MAX_RETRIES = 6
MAX_STEPS = 500

BeforeStep = Callable[[str, int], None]


@dataclass
class DriveLog:
    """What the state machine saw: each step's phase, attempt and result; the error it caught."""

    steps: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    caught: dict[str, Any] | None = None
    retries: int = 0
    abandoned: bool = False

    def phases(self) -> list[str]:
        seen: list[str] = []
        for phase, _, _ in self.steps:
            if not seen or seen[-1] != phase:
                seen.append(phase)
        return seen


def lambda_error(exc: Exception) -> dict[str, Any]:
    """The `$.error` a Catch hands on for a Lambda task that raised `exc`."""
    return {
        "Error": type(exc).__name__,
        "Cause": json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc)}),
    }


def drive(world: FakeWorld, restart_id: str, before_step: BeforeStep | None = None) -> DriveLog:
    runner = RestartRunner(world.deps)
    log = DriveLog()
    stored = world.restarts.get(restart_id)
    assert stored is not None
    phase: str | None = stored[0].plan[len(INTAKE_STEPS)]
    attempt = 0
    try:
        while phase is not None:
            if before_step is not None:
                before_step(phase, attempt)
            result = _with_retry(log, partial(runner.advance, restart_id, phase, attempt))  # type: ignore[arg-type]
            log.steps.append((phase, attempt, result.to_output()))
            world.clock.advance(result.wait_seconds)
            phase, attempt = (result.next, 0) if result.done else (phase, result.attempt)
            assert len(log.steps) < MAX_STEPS, "the restart never finished"
    except Exception as exc:  # the state machine's Catch: States.ALL
        log.caught = lambda_error(exc)
        _clean_up(world, runner, restart_id, log)
    return log


def _clean_up(world: FakeWorld, runner: RestartRunner, restart_id: str, log: DriveLog) -> None:
    assert log.caught is not None
    error = log.caught
    attempt = 0
    try:
        while True:
            result = _with_retry(log, partial(runner.cleanup, restart_id, error, attempt))
            log.steps.append(("cleanup", attempt, result.to_output()))
            if result.done:
                return
            world.clock.advance(result.wait_seconds)
            attempt = result.attempt
            assert len(log.steps) < MAX_STEPS, "cleanup never finished"
    except Exception as exc:
        log.abandoned = True
        runner.abandon(restart_id, lambda_error(exc))


def _with_retry(log: DriveLog, step: Callable[[], StepResult]) -> StepResult:
    for _ in range(MAX_RETRIES):
        try:
            return step()
        except RETRIED:
            log.retries += 1
    return step()
