#!/usr/bin/env python3
"""Writes statemachine/restart.asl.json: one restart of one cluster, in the seed's phase order.

ASL has no way to share a block between states, so the state machine is generated from this
small source: one Retry policy, one Catch, one poll loop shape, and the phase table below.
The committed file is this script's output (tests/unit/test_restart_asl.py checks it).

    .venv/bin/python scripts/build_restart_asl.py            # (re)write the committed file
    .venv/bin/python scripts/build_restart_asl.py --check    # exit 1 if the committed file differs

Reading the chain: each phase is a Task that the Lambda runs one step at a time; `<Phase>Done?`
either moves on or waits (`<Phase>Wait`, the seconds the step asked for) and calls it again.
The phases a plan may skip sit behind a guard Choice on the plan the intake put in the input
(`$.plan.<phase>`). Every failure, the restart's own deadline and a cancel included (the step
raises them), is caught into the cleanup path.

The whole-execution `TimeoutSeconds` is the outer net behind the restart's own deadline (which
the step enforces from `timeout_minutes`): the longest restart a request may ask for, plus the
cleanup budget, plus a margin, derived from those constants so it cannot drift from them. It is
a literal because Step Functions needs an integer there and a definition substitution arrives
as a string unless written unquoted, which would make the committed file invalid JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from restarter.domain.models import RestartRequest
from restarter.services.restart.runner import CLEANUP_BUDGET

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFINITION_PATH = REPO_ROOT / "statemachine" / "restart.asl.json"
STEP_FUNCTION = "${RestartStepFunctionArn}"
CLEANUP_ONLY = "cleanup"  # `step.next` of the cleanup-only execution (services/ended_executions.py)

State = dict[str, Any]


def longest_requestable_minutes() -> int:
    """The `timeout_minutes` bound of the request model (the seed's maximum)."""
    bounds = [getattr(meta, "le", None) for meta in RestartRequest.model_fields["timeout_minutes"].metadata]
    return int(next(bound for bound in bounds if bound is not None))


EXECUTION_MARGIN_MINUTES = 15
EXECUTION_TIMEOUT_SECONDS = (
    longest_requestable_minutes() * 60 + int(CLEANUP_BUDGET.total_seconds()) + EXECUTION_MARGIN_MINUTES * 60
)

# ----------------------------------------------------------------------------- shared policies
RETRY = [
    {
        "ErrorEquals": [
            "TransientProviderError",
            "Lambda.ServiceException",
            "Lambda.AWSLambdaException",
            "Lambda.SdkClientException",
            "Lambda.TooManyRequestsException",
        ],
        "IntervalSeconds": 2,
        "MaxAttempts": 6,
        "BackoffRate": 2.0,
        "MaxDelaySeconds": 60,
        "JitterStrategy": "FULL",
    },
    {"ErrorEquals": ["ConflictError"], "IntervalSeconds": 1, "MaxAttempts": 3, "BackoffRate": 2.0},
]
STEP_TIMEOUT_SECONDS = 120
STEP_RESULT = {
    "done.$": "$.Payload.done",
    "attempt.$": "$.Payload.attempt",
    "wait_seconds.$": "$.Payload.wait_seconds",
    "next.$": "$.Payload.next",
}


def catch_all(next_state: str, result_path: str = "$.error") -> list[State]:
    return [{"ErrorEquals": ["States.ALL"], "ResultPath": result_path, "Next": next_state}]


def step_task(comment: str, payload: State, result_path: str, next_state: str, catch: list[State]) -> State:
    """One call of RestartStepFunction, with the shared Retry policy and a Catch."""
    return {
        "Comment": comment,
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName": STEP_FUNCTION, "Payload": payload},
        "ResultSelector": STEP_RESULT,
        "ResultPath": result_path,
        "TimeoutSeconds": STEP_TIMEOUT_SECONDS,
        "Retry": RETRY,
        "Next": next_state,
        "Catch": catch,
    }


# ----------------------------------------------------------------------------- the phase table
# (phase, state name, guard Choice or None when every plan runs it, what it does)
PHASES: list[tuple[str, str, str | None, str]] = [
    ("stopping_processes", "StoppingProcesses", "Graceful?", "Gracefully stop running processes"),
    ("creating_checkpoint", "CreatingCheckpoint", "NeedsCheckpoint?", "Snapshot the volumes (preserve_state)"),
    ("updating_configuration", "UpdatingConfiguration", "NeedsConfigurationUpdate?", "Apply hardware/software updates"),
    ("rebooting", "Rebooting", None, "Reboot, power-cycle (force) or start the instances"),
    ("starting_services", "StartingServices", None, "Start system services and Docker containers"),
    ("health_checks", "HealthChecks", None, "Run health checks; a failed round is retried from here"),
]
GUARD_COMMENTS = {
    "Graceful?": "A graceful restart of a running cluster stops its processes first (force: no)",
    "NeedsCheckpoint?": "Only with preserve_state",
    "NeedsConfigurationUpdate?": "Only when the request changes something",
}
# Phases whose finished step may ask for a settle wait before the next phase (`wait_seconds` > 0).
SETTLES = {"rebooting": "Let the instances boot (3-5 minutes typical) before polling their status checks"}


def phase_states(phase: str, name: str, comment: str, next_state: str) -> dict[str, State]:
    """Task -> `<Name>Done?` -> `<Name>Wait` -> Task again, until the step says done."""
    payload = {"action": "advance", "phase": phase, "restart_id.$": "$.restart_id", "attempt.$": "$.step.attempt"}
    settle_rules: list[State] = []
    if phase in SETTLES:
        settle_rules.append(
            {
                "And": [
                    {"Variable": "$.step.done", "BooleanEquals": True},
                    {"Variable": "$.step.wait_seconds", "NumericGreaterThan": 0},
                ],
                "Next": f"{name}Settle",
            }
        )
    states: dict[str, State] = {
        name: step_task(f"Phase {phase}: {comment}", payload, "$.step", f"{name}Done?", catch_all("PrepareCleanup")),
        f"{name}Done?": {
            "Type": "Choice",
            "Choices": [
                {"Variable": "$.step.next", "StringEquals": CLEANUP_ONLY, "Next": "PrepareCleanup"},
                *settle_rules,
                {"Variable": "$.step.done", "BooleanEquals": True, "Next": next_state},
            ],
            "Default": f"{name}Wait",
        },
        f"{name}Wait": {"Type": "Wait", "SecondsPath": "$.step.wait_seconds", "Next": name},
    }
    if phase in SETTLES:
        states[f"{name}Settle"] = {
            "Type": "Wait",
            "Comment": SETTLES[phase],
            "SecondsPath": "$.step.wait_seconds",
            "Next": next_state,
        }
    return states


def chain_states() -> dict[str, State]:
    """The phases in the seed's order, each optional one behind its guard, then `Ready`."""
    states: dict[str, State] = {}
    entries = [guard or name for _, name, guard, _ in PHASES] + ["Ready"]
    for index, (phase, name, guard, comment) in enumerate(PHASES):
        following = entries[index + 1]
        if guard is not None:
            states[guard] = {
                "Type": "Choice",
                "Comment": GUARD_COMMENTS[guard],
                "Choices": [{"Variable": f"$.plan.{phase}", "BooleanEquals": True, "Next": name}],
                "Default": following,
            }
        states.update(phase_states(phase, name, comment, following))
    ready_payload = {"action": "advance", "phase": "ready", "restart_id.$": "$.restart_id", "attempt": 0}
    states["Ready"] = step_task(
        "Phase ready: record the result and release the cluster lock",
        ready_payload,
        "$.step",
        "Restarted",
        catch_all("PrepareCleanup"),
    )
    states["Restarted"] = {"Type": "Succeed"}
    return states


def cleanup_states() -> dict[str, State]:
    """Roll back, record the failure, release the lock; if that fails too, abandon."""
    cleanup_payload = {
        "action": "cleanup",
        "restart_id.$": "$.restart_id",
        "error.$": "$.error",
        "attempt.$": "$.cleanup_step.attempt",
    }
    abandon_payload = {"action": "abandon", "restart_id.$": "$.restart_id", "error.$": "$.error"}
    return {
        "PrepareCleanup": {
            "Type": "Pass",
            "Comment": "Any failure, timeout and cancel included, ends here",
            "Result": {"done": False, "attempt": 0, "wait_seconds": 0, "next": None},
            "ResultPath": "$.cleanup_step",
            "Next": "Cleanup",
        },
        "Cleanup": step_task(
            "Roll back what the restart changed, record the failure, release the lock",
            cleanup_payload,
            "$.cleanup_step",
            "CleanupDone?",
            catch_all("Abandon", "$.cleanup_error"),
        ),
        "CleanupDone?": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.cleanup_step.done", "BooleanEquals": True, "Next": "RestartFailed"}],
            "Default": "CleanupWait",
        },
        "CleanupWait": {"Type": "Wait", "SecondsPath": "$.cleanup_step.wait_seconds", "Next": "Cleanup"},
        "Abandon": step_task(
            "Cleanup failed: record it and release the lock so the cluster is not wedged",
            abandon_payload,
            "$.cleanup_step",
            "RestartFailed",
            catch_all("CleanupFailed", "$.cleanup_error"),
        ),
        "RestartFailed": {
            "Type": "Fail",
            "Error": "RestartFailed",
            "Cause": "The restart failed; its record holds the error and what was rolled back",
        },
        "CleanupFailed": {
            "Type": "Fail",
            "Error": "CleanupFailed",
            "Cause": "Cleanup could not record the failure; the cluster lock expires on its own",
        },
    }


def build_definition() -> State:
    first_phase = PHASES[0][2] or PHASES[0][1]
    start: dict[str, State] = {
        "CleanupOnly?": {
            "Type": "Choice",
            "Comment": "An execution that ended early is concluded by a cleanup-only execution of this machine",
            "Choices": [{"Variable": "$.step.next", "StringEquals": CLEANUP_ONLY, "Next": "PrepareCleanup"}],
            "Default": first_phase,
        }
    }
    return {
        "Comment": "restarter: one restart of one GPU cluster, in the seed's phase order (generated by "
        "scripts/build_restart_asl.py; edit that, not this file)",
        "StartAt": "CleanupOnly?",
        "TimeoutSeconds": EXECUTION_TIMEOUT_SECONDS,
        "States": {**start, **chain_states(), **cleanup_states()},
    }


def render() -> str:
    """The committed text."""
    return json.dumps(build_definition(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed file is not the output")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if DEFINITION_PATH.read_text(encoding="utf-8") != text:
            print(f"{DEFINITION_PATH} is out of date: run scripts/build_restart_asl.py", file=sys.stderr)
            return 1
        return 0
    DEFINITION_PATH.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
