"""What integration tests read the embedded AWS with: published events, a restart's outcome,
the instances and SSM commands of a cluster, and a client of the REST API; then the helpers that
several test files of one topic share (API, queue, schedules and rollouts, restarts, alarms)."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from restarter.domain.models import Cluster, RestartRecord
from restarter.domain.rollouts import RolloutSpec
from restarter.handlers import alarm as alarm_handler
from restarter.handlers import queue
from restarter_local.engine import LocalAws
from restarter_local.lambdas import LocalLambdaContext
from tests.conftest import load_event


@dataclass
class EventCapture:
    """Reads what the product published on its EventBridge bus (through a rule to SQS)."""

    aws: LocalAws
    queue_url: str

    def drain(self) -> list[dict[str, Any]]:
        sqs = self.aws.client("sqs")
        events: list[dict[str, Any]] = []
        while True:
            messages = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return events
            for message in messages:
                events.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])


@dataclass
class RestartOutcome:
    record: RestartRecord
    execution: dict[str, Any]
    cluster: Cluster
    lock_holder: str | None


def read_outcome(aws: LocalAws, restart_id: str, execution: dict[str, Any]) -> RestartOutcome:
    assert aws.deps is not None
    stored = aws.deps.restarts.get(restart_id)
    assert stored is not None
    record = stored[0]
    cluster = aws.deps.clusters.get(record.cluster_id)
    assert cluster is not None
    return RestartOutcome(record, execution, cluster, aws.deps.locks.holder(record.cluster_id))


def instances(aws: LocalAws, cluster: Cluster) -> list[dict[str, Any]]:
    reservations = aws.client("ec2").describe_instances(InstanceIds=cluster.instance_ids)["Reservations"]
    return [i for r in reservations for i in r["Instances"]]


def sent_commands(aws: LocalAws, cluster: Cluster) -> list[dict[str, Any]]:
    """Every SSM command sent to the cluster's instances, oldest first."""
    commands = aws.client("ssm").list_commands()["Commands"]
    mine = [c for c in commands if set(c["InstanceIds"]) & set(cluster.instance_ids)]
    return sorted(mine, key=lambda c: c["RequestedDateTime"])


def command_ops(aws: LocalAws, cluster: Cluster) -> list[str]:
    """The restarter op of each command (`# restarter-op:`), or the document name."""
    ops = []
    for command in sent_commands(aws, cluster):
        lines = command.get("Parameters", {}).get("commands", [])
        marker = next((line for line in lines if line.startswith("# restarter-op: ")), None)
        ops.append(marker.removeprefix("# restarter-op: ") if marker else command["DocumentName"])
    return ops


@dataclass
class ApiClient:
    """Calls the API through the local API Gateway (authorizer, gateway responses, proxy event)."""

    gateway: Any
    keys: dict[str, str]

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: str | None = "admin",
        headers: dict[str, str] | None = None,
        raw: str | None = None,
        query: dict[str, list[str]] | None = None,
    ) -> Any:
        sent = {"Content-Type": "application/json"}
        if key is not None:
            sent["Authorization"] = f"Bearer {self.keys.get(key, key)}"
        sent.update(headers or {})
        payload = raw if raw is not None else (json.dumps(body) if body is not None else None)
        return self.gateway.handle(method, path, headers=sent, body=payload, query=query)


def explain_restarts(aws: LocalAws, report: dict[str, Any]) -> str:
    """For an assertion message: how each rollout item's restart ended, with its error details."""
    assert aws.deps is not None
    lines = []
    for item in report["results"]:
        stored = aws.deps.restarts.get(item["restart_id"]) if item.get("restart_id") else None
        record = stored[0] if stored else None
        error = record.error.model_dump() if record and record.error else None
        health = record.phase_state.get("health_checks", {}).get("last_problems") if record else None
        lines.append(f"{item['cluster_id']}: {item['status']} / {record.status if record else '-'} {error} {health}")
    return "\n".join(lines)


# ---------------------------------------------------------------- shared by every topic

Seed = Callable[..., Cluster]  # the `seed` fixture: seeds a cluster, defaults are the seed's cluster_abc123
RESTART = "/v1/clusters/cluster_abc123/restart"


def restarts_of(aws: LocalAws, cluster_id: str) -> list[RestartRecord]:
    assert aws.deps is not None
    records, _ = aws.deps.restarts.list_for_cluster(cluster_id, limit=100)
    return records


# ---------------------------------------------------------------- the queue (QueueRestartFunction)

CONTEXT_NAME = "QueueRestartFunction"


def handle(event: dict[str, Any]) -> dict[str, Any]:
    """Runs QueueRestartFunction on an SQS event."""
    return dict(queue.lambda_handler(event, LocalLambdaContext(CONTEXT_NAME)))


def failed_ids(response: dict[str, Any]) -> list[str]:
    return [item["itemIdentifier"] for item in response["batchItemFailures"]]


# ---------------------------------------------------------------- schedules and rollouts

WEEKLY = {
    "name": "weekly-ml-maintenance",
    "schedule_expression": "cron(0 2 ? * SUN *)",
    "timezone": "Europe/Berlin",
    "flexible_window_minutes": 15,
    "window_minutes": 240,
    "description": "Sunday night patching of the ML fleet",
    "rollout": {
        "labels": {"team": "ml"},
        "request": {"apply_system_updates": True, "timeout_minutes": 30},
        "max_concurrency": 2,
        "failure_threshold": {"percentage": 25},
    },
}


def ml_fleet(seed: Seed, count: int = 2, tenant_id: str = "default") -> list[Cluster]:
    return [
        seed(
            id=f"cluster_{tenant_id}_{i}",
            name=f"ml-{tenant_id}-{i}",
            instance_count=1,
            tenant_id=tenant_id,
            labels={"team": "ml", "env": "production" if i == 0 else "dev"},
        )
        for i in range(count)
    ]


SEED_RESULT_KEYS = {"cluster_id", "name", "success", "downtime_seconds", "updates_applied", "error"}


def spec(**fields: Any) -> RolloutSpec:
    body: dict[str, Any] = {"maintenance_window": {"id": "mw-2024-01-15"}, "cluster_ids": ["cluster_a"]}
    body.update(fields)
    return RolloutSpec.model_validate(body)


# ---------------------------------------------------------------- restart scenarios

Run = Callable[..., RestartOutcome]


def phases_run(outcome: RestartOutcome) -> list[tuple[str, str]]:
    return [(entry.phase, entry.outcome) for entry in outcome.record.phase_history]


def ec2_calls(aws: LocalAws, action: str) -> int:
    return int(aws.agent.calls.get(("ec2", action), 0))


# ---------------------------------------------------------------- alarm recovery (AlarmRecoveryFunction)

INSTANCE_ID = "i-12345678901234567"  # the instance of events/alarm_state_change_instance.json
TABLE_ENV = "RECOVERY_TABLE"  # the AlarmRecoveryFunction's variable
DEFAULT_TABLE = "restarter-recovery"


def event(name: str = "alarm_state_change_instance.json", *, event_id: str | None = None, **detail: Any) -> Any:
    """An EventBridge alarm state change from `events/`; `event_id` makes it another transition."""
    sample = copy.deepcopy(load_event(name))
    if event_id is not None:
        # another firing: a new event id and a new transition time (the transition's identity)
        sample["id"] = event_id
        seconds = int(hashlib.sha256(event_id.encode()).hexdigest(), 16) % 3600
        sample["detail"]["state"] = {
            **sample["detail"]["state"],
            "timestamp": f"2019-10-02T{17 + seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}.000+0000",
        }
    sample["detail"].update(detail)
    return sample


def send(payload: dict[str, Any]) -> dict[str, Any]:
    """Runs AlarmRecoveryFunction on an alarm event and returns the data of its success answer."""
    answer = alarm_handler.lambda_handler(payload, LocalLambdaContext("AlarmRecoveryFunction"))
    assert answer["success"] is True
    data: dict[str, Any] = answer["data"]
    return data


def restart(aws: LocalAws, restart_id: str) -> RestartRecord:
    assert aws.deps is not None
    stored = aws.deps.restarts.get(restart_id)
    assert stored is not None
    return stored[0]


def finished(aws: LocalAws, restart_id: str) -> RestartRecord:
    aws.wait_for_executions()
    return restart(aws, restart_id)


def alarm_audit(aws: LocalAws, entity_id: str) -> list[dict[str, Any]]:
    assert aws.deps is not None
    return [e for e in aws.deps.audit.entries(entity_id) if e["action"] == "alarm.state_changed"]


def seed_instance_cluster(seed: Seed, **overrides: Any) -> Cluster:
    return seed(instance_ids=[INSTANCE_ID], instance_count=1, **overrides)


ACTION_ARN = "arn:aws:cloudwatch:us-east-1:123456789012:alarm:ServerCpuTooHigh"  # events/alarm_lambda_action_*


def action_event(name: str = "alarm_lambda_action_instance.json", *, timestamp: str | None = None) -> Any:
    """A CloudWatch alarm invoking the function directly; `timestamp` makes it another transition."""
    sample = copy.deepcopy(load_event(name))
    if timestamp is not None:
        sample["time"] = sample["alarmData"]["state"]["timestamp"] = timestamp
    return sample
