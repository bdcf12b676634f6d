"""`restarter invoke` (like `sam local invoke`, on the embedded AWS) and `restarter demo`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from restarter_cli.main import main
from tests.conftest import EVENTS


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


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


def test_invoke_the_step_function_reports_its_error_like_lambda(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # a step for a restart id the intake never makes: nothing is seeded, the handler refuses it
    event = json.loads((EVENTS / "restart_step_advance.json").read_text())
    event["restart_id"] = "not-a-restart"
    path = tmp_path / "step.json"
    path.write_text(json.dumps(event))
    code, out, _ = run(capsys, "invoke", "RestartStepFunction", "-e", str(path))
    output = json.loads(out)
    assert code == 1
    assert output["errored"] is True
    assert output["result"]["errorType"] == "ValidationError"


def test_invoke_the_step_function_with_the_sample_runs_the_seeded_restarts_step(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # the sample's restart is seeded as the intake leaves it, its execution held: the step runs
    code, output = invoke(capsys, "RestartStepFunction", "restart_step_advance.json")
    assert code == 0
    assert output["errored"] is False
    assert output["result"]["done"] is False and output["result"]["wait_seconds"] > 0
    [restart] = output["restarts"]
    assert (restart["id"], restart["status"], restart["progress"]["phase"]) == (
        "rst_0123456789abcdef",
        "restarting",
        "stopping_processes",
    )


def test_invoke_output_is_only_json_when_metrics_are_on(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Powertools prints EMF metric lines on stdout (a Lambda's log stream): in local mode they go to stderr
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    code, out, err = run(capsys, "invoke", "StartRestartFunction", "-e", str(EVENTS / "start_restart_basic.json"))
    assert code == 0
    assert json.loads(out)["restarts"][0]["status"] == "ready"
    assert '{"_aws"' in err


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
    # the rollout's own duration (first start to last end, simulated): at least its longest restart
    assert scheduled["restart_duration_seconds"] >= scheduled["downtime_seconds"] > 0


def test_demo_past_its_deadline_exits_1_with_a_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "demo", "--deadline", "0.5")
    assert code == 1
    assert "the demo passed its deadline of 0.5 s" in err


def test_invoke_the_queue_function_with_the_sample_batch(capsys: pytest.CaptureFixture[str]) -> None:
    code, output = invoke(capsys, "QueueRestartFunction", "sqs_restart_batch.json")
    assert code == 0
    # the malformed JSON and the out-of-bounds field come back; the two restarts run (the
    # cluster the fleet lacks, cluster_def456, is seeded as the message names it)
    assert output["result"]["batchItemFailures"] == [
        {"itemIdentifier": "be534abc-a1a7-44da-abec-d601a3bc56e2"},
        {"itemIdentifier": "97a48216-b429-4b16-914a-eb81bcbec456"},
    ]
    assert sorted((r["cluster_id"], r["status"], r["trigger"]) for r in output["restarts"]) == [
        ("cluster_abc123", "ready", "queue"),
        ("cluster_def456", "ready", "queue"),
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
    # the default fleet's team=ml clusters; the embedded clock starts at the sample's scheduled
    # time (Scheduler delivers a firing then), so its maintenance window is open
    [rollout] = output["rollouts"]
    assert [(r["cluster_id"], r["status"]) for r in rollout["results"]] == [
        ("cluster_abc123", "succeeded"),
        ("cluster_prod01", "succeeded"),
    ]
    assert sorted((r["cluster_id"], r["status"]) for r in output["restarts"]) == [
        ("cluster_abc123", "ready"),
        ("cluster_prod01", "ready"),
    ]


def test_invoke_the_schedule_function_now_finds_the_window_closed(capsys: pytest.CaptureFixture[str]) -> None:
    # --now: the firing arrives today, long after the sample's window closed, and nothing restarts
    code, out, _ = run(
        capsys, "invoke", "ScheduledRolloutFunction", "-e", str(EVENTS / "schedule_firing.json"), "--now", "now"
    )
    output = json.loads(out)
    assert code == 0
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
