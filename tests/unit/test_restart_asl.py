"""The restart state machine reads like the seed's phase table; checked on the generated JSON.

A small walker follows the definition the way Step Functions would (Choice, Task, Wait, Pass;
Retry is not modelled, Catch is), with each Task answered by a stand-in for the step Lambda.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest
from scripts.build_restart_asl import DEFINITION_PATH, EXECUTION_TIMEOUT_SECONDS, RETRY, render

from restarter.domain.models import RestartRequest, RestartTarget
from restarter.domain.planning import INTAKE_STEPS, PHASE_DESCRIPTIONS, plan_phases

SEED_ORDER = [
    "stopping_processes",
    "creating_checkpoint",
    "updating_configuration",
    "rebooting",
    "starting_services",
    "health_checks",
    "ready",
]
GUARDS = {
    "Graceful?": "stopping_processes",
    "NeedsCheckpoint?": "creating_checkpoint",
    "NeedsConfigurationUpdate?": "updating_configuration",
}
ASL: dict[str, Any] = json.loads(DEFINITION_PATH.read_text(encoding="utf-8"))
STATES: dict[str, dict[str, Any]] = ASL["States"]

Step = Callable[[str, dict[str, Any]], dict[str, Any]]


class StepFailedError(Exception):
    """A step Lambda that raised: the walker sends it to the Task's Catch."""


# ---------------------------------------------------------------- a walker over the definition
def _read(data: dict[str, Any], path: str) -> Any:
    assert path.startswith("$."), path
    value: Any = data
    for key in path[2:].split("."):
        if not isinstance(value, dict) or key not in value:
            # Step Functions fails the execution (States.Runtime) on a Choice over a missing path
            raise AssertionError(f"{path} is not in the state's input")
        value = value[key]
    return value


def _write(data: dict[str, Any], path: str, value: Any) -> None:
    keys = path[2:].split(".")
    for key in keys[:-1]:
        data = data.setdefault(key, {})
    data[keys[-1]] = value


def _matches(rule: dict[str, Any], data: dict[str, Any]) -> bool:
    if "And" in rule:
        return all(_matches(r, data) for r in rule["And"])
    value = _read(data, rule["Variable"])
    if "StringEquals" in rule:
        return isinstance(value, str) and value == rule["StringEquals"]
    if "BooleanEquals" in rule:
        return isinstance(value, bool) and value == rule["BooleanEquals"]
    if "NumericGreaterThan" in rule:
        return isinstance(value, int | float) and not isinstance(value, bool) and value > rule["NumericGreaterThan"]
    raise AssertionError(f"the walker does not know this rule: {rule}")


def walk(execution_input: dict[str, Any], step: Step) -> tuple[list[str], list[str], str]:
    """(states entered, Task calls as `action:phase`, the end state)."""
    data = copy.deepcopy(execution_input)
    name = ASL["StartAt"]
    entered: list[str] = []
    calls: list[str] = []
    for _ in range(500):
        entered.append(name)
        state = STATES[name]
        kind = state["Type"]
        if kind in ("Succeed", "Fail"):
            return entered, calls, name
        if kind == "Choice":
            name = next((r["Next"] for r in state["Choices"] if _matches(r, data)), state["Default"])
        elif kind == "Wait":
            assert isinstance(_read(data, state["SecondsPath"]), int)
            name = state["Next"]
        elif kind == "Pass":
            _write(data, state["ResultPath"], copy.deepcopy(state["Result"]))
            name = state["Next"]
        elif kind == "Task":
            payload = {
                key.removesuffix(".$"): _read(data, value) if key.endswith(".$") else value
                for key, value in state["Parameters"]["Payload"].items()
            }
            calls.append(f"{payload['action']}:{payload.get('phase', '')}")
            try:
                result = step(payload["action"], payload)
            except StepFailedError as exc:
                [catch] = state["Catch"]
                _write(data, catch["ResultPath"], {"Error": "StepFailedError", "Cause": str(exc)})
                name = catch["Next"]
                continue
            _write(data, state["ResultPath"], result)
            name = state["Next"]
        else:
            raise AssertionError(f"unexpected state type {kind}")
    raise AssertionError("the walk did not end")


def runner(polls: int = 0, settle: int = 180, overrides: dict[str, Step] | None = None) -> Step:
    """A stand-in for the step Lambda: every phase needs `polls` extra calls; reboot settles."""

    def step(action: str, payload: dict[str, Any]) -> dict[str, Any]:
        phase = payload.get("phase", action)
        if overrides and phase in overrides:
            return overrides[phase](action, payload)
        attempt = payload.get("attempt", 0)
        if attempt < polls and phase not in ("ready", "abandon"):
            return {"done": False, "attempt": attempt + 1, "wait_seconds": 10, "next": None}
        wait = settle if phase == "rebooting" else 0
        return {"done": True, "attempt": 0, "wait_seconds": wait, "next": None}

    return step


def intake_input(plan: list[str]) -> dict[str, Any]:
    """What services/restart_intake.py starts the execution with."""
    first = plan[len(INTAKE_STEPS)]
    return {
        "restart_id": "rst_0123456789abcdef",
        "cluster_id": "cluster_abc",
        "step": {"done": True, "next": first, "attempt": 0},
        "plan": {phase: phase in plan for phase in PHASE_DESCRIPTIONS if phase not in INTAKE_STEPS},
    }


def phases_called(calls: list[str]) -> list[str]:
    """The phases in the order they ran, each once however often it was polled."""
    ran = [c.removeprefix("advance:") for c in calls if c.startswith("advance:")]
    return [p for i, p in enumerate(ran) if i == 0 or ran[i - 1] != p]


def task_named(phase: str) -> str:
    [name] = [n for n, s in STATES.items() if s["Type"] == "Task" and s["Parameters"]["Payload"].get("phase") == phase]
    return name


# ---------------------------------------------------------------- the committed file
def test_the_committed_file_is_the_generators_output() -> None:
    assert DEFINITION_PATH.read_text(encoding="utf-8") == render(), "run scripts/build_restart_asl.py"


def test_the_execution_timeout_is_an_integer_past_the_longest_restart_and_its_cleanup() -> None:
    # the committed file is plain JSON (ASL above parsed it), and Step Functions wants an integer
    assert ASL["TimeoutSeconds"] == EXECUTION_TIMEOUT_SECONDS
    assert isinstance(ASL["TimeoutSeconds"], int)
    # past the longest restart a request may ask for (timeout_minutes at most 60) plus its cleanup (15)
    RestartRequest(timeout_minutes=60)
    with pytest.raises(ValueError, match="timeout_minutes"):
        RestartRequest(timeout_minutes=61)
    assert ASL["TimeoutSeconds"] >= (60 + 15) * 60


# ---------------------------------------------------------------- the chain and its guards
def test_the_chain_runs_the_seeds_phases_in_order() -> None:
    everything = ["validating", "acquiring_lock", *SEED_ORDER]
    entered, calls, end = walk(intake_input(everything), runner())
    assert phases_called(calls) == SEED_ORDER
    assert end == "Restarted"
    # no hub: after the entry Choice, each phase leads straight to the next one's guard or Task
    assert entered == [
        "CleanupOnly?",
        "Graceful?",
        "StoppingProcesses",
        "StoppingProcessesDone?",
        "NeedsCheckpoint?",
        "CreatingCheckpoint",
        "CreatingCheckpointDone?",
        "NeedsConfigurationUpdate?",
        "UpdatingConfiguration",
        "UpdatingConfigurationDone?",
        "Rebooting",
        "RebootingDone?",
        "RebootingSettle",
        "StartingServices",
        "StartingServicesDone?",
        "HealthChecks",
        "HealthChecksDone?",
        "Ready",
        "Restarted",
    ]


def test_each_guard_reads_its_phase_from_the_plan_in_the_input() -> None:
    for guard, phase in GUARDS.items():
        choice = STATES[guard]
        assert choice["Type"] == "Choice"
        assert choice["Choices"] == [{"Variable": f"$.plan.{phase}", "BooleanEquals": True, "Next": task_named(phase)}]
        following = SEED_ORDER[SEED_ORDER.index(phase) + 1]
        following_guard = next((g for g, p in GUARDS.items() if p == following), None)
        assert choice["Default"] == (following_guard or task_named(following)), guard
    assert [n for n, s in STATES.items() if s["Type"] == "Choice" and n.endswith("?") and n in GUARDS] == list(GUARDS)


@pytest.mark.parametrize(
    ("force", "preserve_state", "changes", "running"), list(itertools.product([False, True], repeat=4))
)
def test_the_chain_runs_exactly_the_planned_phases(
    force: bool, preserve_state: bool, changes: bool, running: bool
) -> None:
    plan = plan_phases(
        RestartRequest(force=force, preserve_state=preserve_state),
        RestartTarget(apply_system_updates=changes),
        cluster_running=running,
    )
    _, calls, end = walk(intake_input(plan), runner(polls=2))
    assert phases_called(calls) == [p for p in plan if p not in INTAKE_STEPS]
    assert end == "Restarted"


def test_checkpoint_only_with_preserve_state() -> None:
    for preserve_state in (False, True):
        plan = plan_phases(RestartRequest(preserve_state=preserve_state), RestartTarget(), cluster_running=True)
        _, calls, _ = walk(intake_input(plan), runner())
        assert ("creating_checkpoint" in phases_called(calls)) is preserve_state


# ---------------------------------------------------------------- poll loops inside each phase
@pytest.mark.parametrize("phase", SEED_ORDER[:-1])
def test_each_phase_polls_in_its_own_wait_and_choice(phase: str) -> None:
    name = task_named(phase)
    assert STATES[name]["Next"] == f"{name}Done?"
    assert STATES[f"{name}Done?"]["Default"] == f"{name}Wait"
    assert STATES[f"{name}Wait"] == {"Type": "Wait", "SecondsPath": "$.step.wait_seconds", "Next": name}


def test_a_polled_phase_passes_its_attempt_back_until_done() -> None:
    attempts: list[int] = []
    base = runner(polls=3)

    def health(action: str, payload: dict[str, Any]) -> dict[str, Any]:
        attempts.append(payload["attempt"])
        return base(action, payload)

    plan = plan_phases(RestartRequest(), RestartTarget(), cluster_running=True)
    entered, _, end = walk(intake_input(plan), runner(overrides={"health_checks": health}))
    assert attempts == [0, 1, 2, 3]  # e.g. a health check round that failed is retried from here
    assert entered.count("HealthChecksWait") == 3
    assert end == "Restarted"


def test_reboot_settles_only_when_the_step_asks() -> None:
    plan = plan_phases(RestartRequest(), RestartTarget(), cluster_running=True)
    settled, _, _ = walk(intake_input(plan), runner(settle=180))
    direct, _, _ = walk(intake_input(plan), runner(settle=0))
    assert "RebootingSettle" in settled and STATES["RebootingSettle"]["Next"] == "StartingServices"
    assert "RebootingSettle" not in direct and "StartingServices" in direct


# ---------------------------------------------------------------- cleanup
def test_a_cleanup_only_execution_goes_straight_to_cleanup() -> None:
    # what services/ended_executions.start_cleanup starts: no plan, an error, next "cleanup"
    execution_input = {
        "restart_id": "rst_0123456789abcdef",
        "cluster_id": "cluster_abc",
        "error": {"Error": "ExecutionTimedOut", "Cause": "ended"},
        "step": {"done": True, "next": "cleanup", "attempt": 0},
    }
    entered, calls, end = walk(execution_input, runner(polls=1))
    assert entered[:3] == ["CleanupOnly?", "PrepareCleanup", "Cleanup"]
    assert calls == ["cleanup:", "cleanup:"]
    assert end == "RestartFailed"


@pytest.mark.parametrize("phase", SEED_ORDER)
def test_a_failed_step_in_any_phase_is_cleaned_up(phase: str) -> None:
    def fail(action: str, payload: dict[str, Any]) -> dict[str, Any]:
        raise StepFailedError("RestartTimedOutError")  # the deadline and a cancel are raised like this

    everything = ["validating", "acquiring_lock", *SEED_ORDER]
    entered, calls, end = walk(intake_input(everything), runner(overrides={phase: fail}))
    assert calls[-2:] == [f"advance:{phase}", "cleanup:"]
    assert entered[entered.index(task_named(phase)) + 1] == "PrepareCleanup"
    assert end == "RestartFailed"


@pytest.mark.parametrize("phase", SEED_ORDER[:-1])
def test_a_step_answering_next_cleanup_diverts_to_cleanup(phase: str) -> None:
    def divert(action: str, payload: dict[str, Any]) -> dict[str, Any]:
        return {"done": True, "attempt": 0, "wait_seconds": 0, "next": "cleanup"}

    everything = ["validating", "acquiring_lock", *SEED_ORDER]
    execution_input = intake_input(everything) | {"error": {"Error": "RestartCancelledError", "Cause": ""}}
    entered, _, end = walk(execution_input, runner(overrides={phase: divert}))
    assert entered[entered.index(task_named(phase)) + 2] == "PrepareCleanup"
    assert end == "RestartFailed"


def test_a_failed_cleanup_is_abandoned_and_a_failed_abandon_ends_the_execution() -> None:
    def fail(action: str, payload: dict[str, Any]) -> dict[str, Any]:
        raise StepFailedError(action)

    everything = ["validating", "acquiring_lock", *SEED_ORDER]
    _, calls, end = walk(intake_input(everything), runner(overrides={"ready": fail, "cleanup": fail}))
    assert calls[-3:] == ["advance:ready", "cleanup:", "abandon:"]
    assert end == "RestartFailed"
    _, _, end = walk(intake_input(everything), runner(overrides={"ready": fail, "cleanup": fail, "abandon": fail}))
    assert end == "CleanupFailed"


# ---------------------------------------------------------------- one Retry policy, one Catch
def test_every_task_shares_one_retry_policy_and_catches_everything() -> None:
    tasks = {n: s for n, s in STATES.items() if s["Type"] == "Task"}
    assert len(tasks) == 9  # six polled phases, ready, cleanup, abandon
    for name, task in tasks.items():
        assert task["Retry"] == RETRY, name
        assert [c["ErrorEquals"] for c in task["Catch"]] == [["States.ALL"]], name
        expected = {"Cleanup": "Abandon", "Abandon": "CleanupFailed"}.get(name, "PrepareCleanup")
        assert task["Catch"][0]["Next"] == expected, name
