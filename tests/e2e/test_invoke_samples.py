"""Every sample in events/ runs through `restarter invoke` to a real answer: what it names is
seeded first, a schedule firing arrives at its scheduled time, nothing ends "not found" or
"skipped". A new sample must say here what it should do."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from restarter_cli.main import main
from tests.conftest import EVENTS

Output = dict[str, Any]


def body(output: Output) -> Any:
    return json.loads(output["result"]["body"])


def statuses(output: Output) -> list[tuple[str, str]]:
    return sorted((r["cluster_id"], r["status"]) for r in output["restarts"])


def restarted(*clusters: str) -> Callable[[Output], None]:
    def check(output: Output) -> None:
        assert statuses(output) == [(c, "ready") for c in sorted(clusters)]

    return check


def check_step_advance(output: Output) -> None:
    assert output["result"]["done"] is False and output["result"]["wait_seconds"] > 0
    assert [(r["id"], r["status"]) for r in output["restarts"]] == [("rst_0123456789abcdef", "restarting")]


def check_step_cleanup(output: Output) -> None:
    # one step of the cleanup: it has begun putting the cluster back (and waits for it)
    assert set(output["result"]) >= {"done", "attempt"}
    assert [r["id"] for r in output["restarts"]] == ["rst_0123456789abcdef"]


def check_aborted(output: Output) -> None:
    assert output["result"]["data"]["action"] == "cleanup_started"
    [restart] = output["restarts"]
    assert restart["id"] == "rst_0123456789abcdef" and restart["status"] in ("cancelled", "failed")


def check_cancel(output: Output) -> None:
    assert output["result"]["statusCode"] == 202, output["result"]
    assert body(output)["data"]["id"] == "rst_0123456789abcdef"
    assert statuses(output) == [("cluster_abc123", "cancelled")]


def check_rollout_step(output: Output) -> None:
    assert output["result"]["status"] == "running" and output["result"]["restart_id"]
    assert statuses(output) == [("cluster_abc123", "ready")]
    [rollout] = output["rollouts"]
    assert rollout["rollout_id"] == "rol_0123456789abcdef"


def check_schedule_firing(output: Output) -> None:
    assert output["result"]["data"]["started"] is True
    [rollout] = output["rollouts"]
    assert {r["status"] for r in rollout["results"]} == {"succeeded"}
    restarted("cluster_abc123", "cluster_prod01")(output)


def check_api(status: int, *clusters: str) -> Callable[[Output], None]:
    def check(output: Output) -> None:
        assert output["result"]["statusCode"] == status, output["result"]
        assert body(output)["success"] is True
        restarted(*clusters)(output)

    return check


def check_alarm(action: str, *clusters: str) -> Callable[[Output], None]:
    def check(output: Output) -> None:
        assert output["result"]["data"]["action"] == action, output["result"]
        restarted(*clusters)(output)

    return check


def check_authorized(output: Output) -> None:
    assert output["result"]["policyDocument"]["Statement"][0]["Effect"] == "Allow"


def check_unauthorized(output: Output) -> None:
    assert output["result"] == {"errorType": "Exception", "errorMessage": "Unauthorized"}


def check_batch(failures: int, *clusters: str) -> Callable[[Output], None]:
    def check(output: Output) -> None:
        assert len(output["result"]["batchItemFailures"]) == failures, output["result"]
        restarted(*clusters)(output)

    return check


def check_queued_rollout(output: Output) -> None:
    [rollout] = output["rollouts"]
    assert (rollout["total_clusters"], rollout["successful_updates"]) == (2, 2)
    restarted("cluster_abc123", "cluster_prod01")(output)


def check_health(output: Output) -> None:
    assert output["result"]["statusCode"] == 200, output["result"]
    data = body(output)["data"]
    assert data["cluster_id"] == "cluster_abc123" and data["verdict"] in ("unknown", "healthy")


def check_health_check(output: Output) -> None:
    assert output["result"]["statusCode"] == 202, output["result"]
    data = body(output)["data"]
    assert data["check_id"].startswith("hc_") and data["expected_gpus"] == 8  # the seed's p4d.24xlarge


def check_started(output: Output) -> None:
    assert output["result"]["success"] is True
    restarted("cluster_abc123")(output)


# file -> (function, exit code, what its answer must show)
SAMPLES: dict[str, tuple[str, int, Callable[[Output], None]]] = {
    "alarm_lambda_action_instance.json": (
        "AlarmRecoveryFunction",
        0,
        check_alarm("recovery_started", "cluster_err001"),
    ),
    "alarm_lambda_action_metric_math.json": ("AlarmRecoveryFunction", 0, check_alarm("unmapped")),
    "alarm_state_change_cluster_dimension.json": (
        "AlarmRecoveryFunction",
        0,
        check_alarm("recovery_started", "cluster_abc123"),
    ),
    "alarm_state_change_instance.json": ("AlarmRecoveryFunction", 0, check_alarm("recovery_started", "cluster_err001")),
    "alarm_state_change_ok.json": ("AlarmRecoveryFunction", 0, check_alarm("ignored")),
    "api_cancel_restart.json": ("ApiFunction", 0, check_cancel),
    "api_get_cluster.json": ("ApiFunction", 0, check_api(200)),
    "api_cluster_health.json": ("ApiFunction", 0, check_health),
    "api_health_check.json": ("ApiFunction", 0, check_health_check),
    "api_restart_basic.json": ("ApiFunction", 0, check_api(200, "cluster_abc123")),
    "api_restart_config_updates.json": ("ApiFunction", 0, check_api(200, "cluster_abc123")),
    "api_restart_force_snapshot.json": ("ApiFunction", 0, check_api(200, "cluster_abc123")),
    "authorizer_token.json": ("ApiKeyAuthorizerFunction", 0, check_authorized),
    "authorizer_token_bad.json": ("ApiKeyAuthorizerFunction", 1, check_unauthorized),
    "restart_execution_aborted.json": ("RestartExecutionEndedFunction", 0, check_aborted),
    "restart_step_advance.json": ("RestartStepFunction", 0, check_step_advance),
    "restart_step_cleanup.json": ("RestartStepFunction", 0, check_step_cleanup),
    "rollout_step_start_item.json": ("RolloutStepFunction", 0, check_rollout_step),
    "schedule_firing.json": ("ScheduledRolloutFunction", 0, check_schedule_firing),
    # two restarts (cluster_def456 seeded), the malformed JSON and the out-of-bounds field come back
    "sqs_restart_batch.json": ("QueueRestartFunction", 0, check_batch(2, "cluster_abc123", "cluster_def456")),
    "sqs_restart_recovery_priority.json": (
        "QueueRestartFunction",
        0,
        check_batch(0, "cluster_abc123", "cluster_def456", "cluster_ghi789", "cluster_jkl012"),
    ),
    "sqs_rollout.json": ("QueueRestartFunction", 0, check_queued_rollout),
    "start_restart_basic.json": ("StartRestartFunction", 0, check_started),
    "start_restart_config_updates.json": ("StartRestartFunction", 0, check_started),
    "start_restart_force_snapshot.json": ("StartRestartFunction", 0, check_started),
}


def test_every_sample_says_what_it_should_do() -> None:
    assert sorted(p.name for p in EVENTS.glob("*.json")) == sorted(SAMPLES)


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_the_sample_runs_through_restarter_invoke(sample: str, capsys: pytest.CaptureFixture[str]) -> None:
    function, expected_code, check = SAMPLES[sample]
    code = main(["invoke", function, "-e", str(EVENTS / sample)])
    out = capsys.readouterr().out
    output = json.loads(out)  # stdout is the answer only
    assert code == expected_code, output["result"]
    check(output)
    for restart in output["restarts"]:
        assert restart["status"] not in ("skipped", "not_found"), restart
    for rollout in output["rollouts"]:
        assert not any(r["status"].startswith("skipped") for r in rollout["results"]), rollout
