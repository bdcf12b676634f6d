"""RestartStepFunction's contract with the state machine, on the fakes: the event it takes and the
`{done, attempt, wait_seconds, next}` it answers, for advance, cleanup and abandon."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, cast

import pytest
from aws_lambda_powertools.utilities.typing import LambdaContext

from restarter.handlers import restart_step
from restarter.wiring import use_dependencies
from tests.unit.conftest import StartRestart
from tests.unit.fakes import FakeWorld

RESULT_KEYS = {"done", "attempt", "wait_seconds", "next"}


class StepContext:
    """What Lambda passes as the context, as far as the handler's decorators read it."""

    function_name = "RestartStepFunction"
    function_version = "$LATEST"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:RestartStepFunction"
    aws_request_id = "unit-test"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@pytest.fixture
def installed(world: FakeWorld) -> Iterator[FakeWorld]:
    use_dependencies(world.deps)
    yield world
    use_dependencies(None)


def step(event: dict[str, Any]) -> dict[str, Any]:
    return dict(restart_step.lambda_handler(event, cast(LambdaContext, StepContext())))


def test_given_an_advance_event_when_handled_then_the_answer_is_the_state_machines_step(
    installed: FakeWorld, start_restart: StartRestart
) -> None:
    record = start_restart(installed.seed_cluster().id)

    first = step({"action": "advance", "phase": "stopping_processes", "restart_id": record.id, "attempt": 0})
    second = step({"action": "advance", "phase": "stopping_processes", "restart_id": record.id, "attempt": 1})

    assert set(first) == set(second) == RESULT_KEYS
    assert first == {"done": False, "attempt": 1, "wait_seconds": 30, "next": None}
    assert second == {"done": True, "attempt": 0, "wait_seconds": 0, "next": "rebooting"}


def test_given_a_caught_error_when_cleanup_and_abandon_run_then_both_answer_done_and_free_the_cluster(
    installed: FakeWorld, start_restart: StartRestart
) -> None:
    cluster = installed.seed_cluster()
    record = start_restart(cluster.id)
    error = {
        "Error": "PhaseFailedError",
        "Cause": json.dumps({"errorType": "PhaseFailedError", "errorMessage": "Health checks failed"}),
    }

    answers = [step({"action": "cleanup", "restart_id": record.id, "attempt": 0, "error": error})]
    while not answers[-1]["done"]:
        answers.append(
            step({"action": "cleanup", "restart_id": record.id, "attempt": answers[-1]["attempt"], "error": error})
        )
    abandoned = step(
        {"action": "abandon", "restart_id": record.id, "error": {"Error": "States.TaskFailed", "Cause": "boom"}}
    )

    assert all(set(a) == RESULT_KEYS for a in [*answers, abandoned])
    assert abandoned == {"done": True, "attempt": 0, "wait_seconds": 0, "next": None}
    stored = installed.restarts.get(record.id)
    assert stored is not None
    done = stored[0]
    assert done.error is not None and done.error.message == "Health checks failed"
    assert done.status == "failed"  # cleanup concluded first: abandon keeps its status
    assert done.rollback_notes[-1] == "cleanup failed: States.TaskFailed; cluster needs attention"
    assert installed.locks.holder(cluster.id) is None
