"""The Lambda entry points with the sample events of `events/`, and the shape of the ASL."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from restarter.domain.models import Cluster
from restarter.domain.planning import INTAKE_STEPS, PHASE_DESCRIPTIONS
from restarter.handlers import restart_step, start_restart
from restarter_local.engine import LocalAws
from restarter_local.lambdas import LocalLambdaContext
from restarter_local.template import load_template
from tests.conftest import REPO, load_event

START_CONTEXT = LocalLambdaContext("StartRestartFunction")
ASL = json.loads((REPO / "statemachine" / "restart.asl.json").read_text())


def test_start_restart_handler_accepts_the_seeds_basic_event(aws: LocalAws, seed: Callable[..., Cluster]) -> None:
    seed()
    result = start_restart.lambda_handler(
        load_event("start_restart_basic.json"), LocalLambdaContext("StartRestartFunction")
    )

    assert result["success"] is True
    data = result["data"]
    assert data["id"].startswith("rst_") and data["cluster_id"] == "cluster_abc123"
    assert data["status"] == "restarting"
    assert data["progress"]["phase"] == "stopping_processes"
    assert data["reason"] == "Apply system updates"
    execution = aws.wait_for_execution(data["execution_arn"])
    assert execution["status"] == "SUCCEEDED"


def test_start_restart_handler_answers_the_error_envelope(aws: LocalAws, seed: Callable[..., Cluster]) -> None:
    seed()
    event = load_event("start_restart_basic.json")
    event["request"]["timeout_minutes"] = 90

    result = start_restart.lambda_handler(event, LocalLambdaContext("StartRestartFunction"))

    assert result["success"] is False
    assert result["error"]["code"] == "VALIDATION_ERROR"
    assert [e["field"] for e in result["error"]["details"]["errors"]] == ["timeout_minutes"]
    assert aws.executions() == []


def test_an_event_of_the_wrong_shape_is_refused_without_echoing_its_secrets(
    aws: LocalAws, seed: Callable[..., Cluster], caplog: pytest.LogCaptureFixture
) -> None:
    # Given the seed's body sent at the top level instead of under `request`, with a secret
    seed()
    event = {"cluster_id": "cluster_abc123", "environment_updates": {"API_KEY": "sk_live_SECRET_VALUE"}}

    # When the handler gets it
    result = start_restart.lambda_handler(event, LocalLambdaContext("StartRestartFunction"))

    # Then it answers the envelope naming the field, and the value appears nowhere
    assert result["success"] is False
    assert result["error"]["code"] == "VALIDATION_ERROR"
    assert [e["field"] for e in result["error"]["details"]["errors"]] == ["environment_updates"]
    assert "`request`" in result["error"]["message"]
    assert "sk_live_SECRET_VALUE" not in json.dumps(result)
    assert "sk_live_SECRET_VALUE" not in caplog.text
    assert aws.executions() == []


def test_start_restart_handler_for_a_missing_cluster_is_not_found(aws: LocalAws) -> None:
    result = start_restart.lambda_handler(
        load_event("start_restart_basic.json"), LocalLambdaContext("StartRestartFunction")
    )
    assert result == {
        "success": False,
        "error": {"code": "NOT_FOUND", "message": "Cluster not found", "details": {"cluster_id": "cluster_abc123"}},
    }


def test_refused_requests_are_audited_too(aws: LocalAws, seed: Callable[..., Cluster]) -> None:
    cluster = seed()
    event = load_event("start_restart_basic.json")
    event["request"] = {"update_configuration": {"storage_gb": 10}}
    start_restart.lambda_handler(event, LocalLambdaContext("StartRestartFunction"))
    assert aws.deps is not None
    [entry] = aws.deps.audit.entries(cluster.id)
    assert (entry["action"], entry["outcome"], entry["actor"]) == ("restart.requested", "refused", "ops@example.com")
    assert entry["details"]["error_code"] == "VALIDATION_ERROR"


def test_restart_step_handler_rejects_a_malformed_event() -> None:
    from aws_lambda_powertools.utilities.parser import ValidationError

    event = load_event("restart_step_advance.json")
    event["restart_id"] = "not-a-restart"
    with pytest.raises(ValidationError):
        restart_step.lambda_handler(event, LocalLambdaContext("RestartStepFunction"))


def test_restart_step_sample_events_parse() -> None:
    for name in ("restart_step_advance.json", "restart_step_cleanup.json"):
        parsed = restart_step.RestartStepEvent.model_validate(load_event(name))
        assert parsed.restart_id == "rst_0123456789abcdef"


# ---------------------------------------------------------------- the ASL


def _tasks() -> dict[str, dict[str, Any]]:
    return {name: state for name, state in ASL["States"].items() if state["Type"] == "Task"}


def test_every_phase_of_the_domain_has_a_state() -> None:
    # the order and the guards of the chain: tests/unit/test_restart_asl.py
    phases = {task["Parameters"]["Payload"].get("phase") for task in _tasks().values()}
    for phase in PHASE_DESCRIPTIONS:
        if phase in INTAKE_STEPS:
            continue
        assert phase in phases, phase


def test_every_task_retries_transient_errors_and_catches_everything() -> None:
    for name, task in _tasks().items():
        retried = {e for r in task["Retry"] for e in r["ErrorEquals"]}
        assert "TransientProviderError" in retried, name
        assert "Lambda.TooManyRequestsException" in retried, name
        assert task["Catch"][0]["ErrorEquals"] == ["States.ALL"], name
        assert task["TimeoutSeconds"] <= 300, name


def test_every_poll_loop_waits_in_a_wait_state_not_in_a_lambda() -> None:
    waits = [s for s in ASL["States"].values() if s["Type"] == "Wait"]
    assert len(waits) == 8  # six phases, the reboot settle wait, the cleanup
    assert all(w["SecondsPath"].endswith(".wait_seconds") for w in waits)


def test_template_wires_the_state_machine_to_the_step_function() -> None:
    template = load_template()
    machine = template["Resources"]["RestartStateMachine"]["Properties"]
    assert machine["DefinitionUri"] == "statemachine/restart.asl.json"
    assert "RestartStepFunctionArn" in machine["DefinitionSubstitutions"]
    handlers = {
        logical_id: r["Properties"]["Handler"]
        for logical_id, r in template["Resources"].items()
        if r["Type"] == "AWS::Serverless::Function"
    }
    assert handlers == {
        "StartRestartFunction": "restarter.handlers.start_restart.lambda_handler",
        "RestartStepFunction": "restarter.handlers.restart_step.lambda_handler",
        "ApiFunction": "restarter.handlers.api.app.lambda_handler",
        "ApiKeyAuthorizerFunction": "restarter.handlers.authorizer.lambda_handler",
        "QueueRestartFunction": "restarter.handlers.queue.lambda_handler",
        "AlarmRecoveryFunction": "restarter.handlers.alarm.lambda_handler",
        "RolloutStepFunction": "restarter.handlers.rollout_step.lambda_handler",
        "ScheduledRolloutFunction": "restarter.handlers.schedule.lambda_handler",
        "RestartExecutionEndedFunction": "restarter.handlers.execution_ended.lambda_handler",
    }
