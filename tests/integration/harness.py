"""What integration tests read the embedded AWS with: published events, a restart's outcome,
the instances and SSM commands of a cluster, and a client of the REST API."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from restarter.domain.models import Cluster, RestartRecord
from restarter_local.engine import LocalAws


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
