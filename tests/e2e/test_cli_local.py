"""`restarter invoke` (like `sam local invoke`, on the embedded AWS) and `restarter demo`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from restarter_cli.main import main
from tests.conftest import EVENTS


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    # the in-process Lambdas flush Powertools' metric buffer (EMF JSON lines) to stdout
    out = "".join(line for line in captured.out.splitlines(keepends=True) if not line.startswith('{"_aws"'))
    return code, out, captured.err


def invoke(capsys: pytest.CaptureFixture[str], function: str, event: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = run(capsys, "invoke", function, "-e", str(EVENTS / event))
    return code, json.loads(out)


def test_invoke_start_restart_runs_the_execution_to_its_end(capsys: pytest.CaptureFixture[str]) -> None:
    code, output = invoke(capsys, "StartRestartFunction", "start_restart_basic.json")
    assert code == 0
    assert output["result"]["success"] is True
    [restart] = output["restarts"]
    assert (restart["cluster_id"], restart["status"]) == ("cluster_abc123", "ready")


def test_invoke_the_api_function_with_a_proxy_event(capsys: pytest.CaptureFixture[str]) -> None:
    code, output = invoke(capsys, "ApiFunction", "api_restart_basic.json")
    assert code == 0
    assert output["result"]["statusCode"] == 200
    assert output["restarts"][0]["status"] == "ready"


def test_invoke_the_authorizer_with_the_sample_token(capsys: pytest.CaptureFixture[str]) -> None:
    code, output = invoke(capsys, "ApiKeyAuthorizerFunction", "authorizer_token.json")
    assert code == 0
    assert output["result"]["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    code, output = invoke(capsys, "ApiKeyAuthorizerFunction", "authorizer_token_bad.json")
    assert code == 1
    assert output["result"] == {"errorType": "Exception", "errorMessage": "Unauthorized"}


def test_invoke_the_step_function_reports_its_error_like_lambda(capsys: pytest.CaptureFixture[str]) -> None:
    # the sample names a restart that does not exist on a fresh embedded AWS
    code, output = invoke(capsys, "RestartStepFunction", "restart_step_advance.json")
    assert code == 1
    assert output["errored"] is True
    assert output["result"]["errorType"] == "PhaseFailedError"


def test_invoke_an_unknown_function_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "invoke", "NoSuchFunction", "-e", str(EVENTS / "start_restart_basic.json"))
    assert code == 2
    assert "unknown function NoSuchFunction" in err


def test_demo_runs_every_kind_and_reports_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "demo", "--json", "--time-scale", "1200")
    assert code == 0
    report = json.loads(out)
    assert report["ok"] is True
    assert {r["status"] for r in report["results"]} == {"ready", "rolled_back", "3/3 ready"}
    assert {r["via"] for r in report["results"]} == {"api", "cli", "alarm", "queue", "sched"}
    [scheduled] = [r for r in report["results"] if r["via"] == "sched"]
    assert scheduled["rollout_id"].startswith("rol_sch_")


def test_invoke_the_queue_function_with_the_sample_batch(capsys: pytest.CaptureFixture[str]) -> None:
    code, output = invoke(capsys, "QueueRestartFunction", "sqs_restart_batch.json")
    assert code == 0
    # the sample's unknown cluster, malformed JSON and out-of-bounds field come back; the rest restarts
    assert len(output["result"]["batchItemFailures"]) == 3
    assert [(r["cluster_id"], r["status"], r["trigger"]) for r in output["restarts"]] == [
        ("cluster_abc123", "ready", "queue")
    ]


def test_invoke_the_alarm_function_with_the_aws_docs_sample(capsys: pytest.CaptureFixture[str]) -> None:
    # the default fleet gives cluster_err001 the sample's instance id
    code, output = invoke(capsys, "AlarmRecoveryFunction", "alarm_state_change_instance.json")
    assert code == 0
    assert output["result"]["data"]["action"] == "recovery_started"
    [restart] = output["restarts"]
    assert (restart["cluster_id"], restart["trigger"], restart["restart_type"], restart["status"]) == (
        "cluster_err001",
        "alarm",
        "force",
        "ready",
    )


def test_invoke_the_schedule_function_with_the_sample_firing(capsys: pytest.CaptureFixture[str]) -> None:
    code, output = invoke(capsys, "ScheduledRolloutFunction", "schedule_firing.json")
    assert code == 0
    assert output["result"]["data"]["started"] is True
    # the default fleet's team=ml clusters; the sample's scheduled time is long past, so its
    # maintenance window has closed and nothing restarts
    [rollout] = output["rollouts"]
    assert [(r["cluster_id"], r["status"]) for r in rollout["results"]] == [
        ("cluster_abc123", "skipped_window_closed"),
        ("cluster_prod01", "skipped_window_closed"),
    ]
    assert output["restarts"] == []


def test_invoke_the_queue_function_with_a_rollout_message(capsys: pytest.CaptureFixture[str]) -> None:
    code, output = invoke(capsys, "QueueRestartFunction", "sqs_rollout.json")
    assert code == 0
    assert output["result"] == {"batchItemFailures": []}
    [rollout] = output["rollouts"]
    assert (rollout["total_clusters"], rollout["status"]) == (2, "completed")
    assert sorted((r["cluster_id"], r["trigger"]) for r in output["restarts"]) == [
        ("cluster_abc123", "queue"),
        ("cluster_prod01", "queue"),
    ]
