"""Shared fixtures: the embedded AWS, a seeded GPU fleet, and helpers to run a restart to its end."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_DEV", "false")

from restarter.domain.models import Cluster, PortMapping, RestartRecord
from restarter.services.restart_intake import accept_restart
from restarter_local.engine import LocalAws
from restarter_local.fleet import ClusterSpec, seed_cluster

REPO = Path(__file__).resolve().parents[1]
EVENTS = REPO / "events"
SHARED_DATA = REPO.parent / "shared" / "data"

# Simulated seconds per real second: a 3-minute reboot wait takes 0.3 s.
TIME_SCALE = 600.0


def load_event(name: str) -> dict[str, Any]:
    return dict(json.loads((EVENTS / name).read_text()))


@pytest.fixture
def aws(request: pytest.FixtureRequest) -> Iterator[LocalAws]:
    """The embedded AWS; `@pytest.mark.time_scale(N)` runs a test at another speed."""
    marker = request.node.get_closest_marker("time_scale")
    with LocalAws(time_scale=marker.args[0] if marker else TIME_SCALE) as engine:
        yield engine


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


@pytest.fixture
def published(aws: LocalAws) -> EventCapture:
    assert aws.settings is not None
    sqs = aws.client("sqs")
    queue_url = sqs.create_queue(QueueName="restarter-events-capture")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events = aws.client("events")
    events.put_rule(
        Name="capture-all",
        EventBusName=aws.settings.event_bus_name,
        EventPattern=json.dumps({"source": ["restarter"]}),
    )
    events.put_targets(
        Rule="capture-all",
        EventBusName=aws.settings.event_bus_name,
        Targets=[{"Id": "sqs", "Arn": queue_arn}],
    )
    return EventCapture(aws, queue_url)


DEFAULT_PORTS = [PortMapping(internal_port=8888, external_port=30888, description="Jupyter")]


@pytest.fixture
def seed(aws: LocalAws) -> Callable[..., Cluster]:
    """Seed a cluster; defaults are the seed's `cluster_abc123` / `ml-training-cluster`."""

    def _seed(**overrides: Any) -> Cluster:
        fields: dict[str, Any] = {
            "id": "cluster_abc123",
            "name": "ml-training-cluster",
            "instance_type": "p4d.24xlarge",
            "instance_count": 2,
            "image": "tensorone/pytorch:2.1-cuda12.1",
            "environment": {"MODEL_VERSION": "v1.0", "HF_TOKEN": "hf_secret_value_never_logged"},
            "ports": DEFAULT_PORTS,
        }
        fields.update(overrides)
        return seed_cluster(aws, ClusterSpec(**fields))

    return _seed


@dataclass
class RestartOutcome:
    record: RestartRecord
    execution: dict[str, Any]
    cluster: Cluster
    lock_holder: str | None


@pytest.fixture
def run_restart(aws: LocalAws) -> Callable[..., RestartOutcome]:
    """Accept a restart like any trigger would, run its execution to the end, read the results."""

    def _run(cluster_id: str, body: dict[str, Any] | None = None, timeout: float = 60) -> RestartOutcome:
        assert aws.deps is not None
        accepted = accept_restart(aws.deps, cluster_id, body or {}, trigger="cli", requested_by="tests@example.com")
        assert accepted.execution_arn
        execution = aws.wait_for_execution(accepted.execution_arn, timeout)
        return read_outcome(aws, accepted.id, execution)

    return _run


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


# ---------------------------------------------------------------- the REST API


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


@pytest.fixture
def api(aws: LocalAws) -> ApiClient:
    """Keys: `admin` (tenant default: read, restart), `reader` (read only), `other` (another tenant)."""
    from restarter_local.gateway import LocalApiGateway

    now = aws.clock.now()
    keys = {
        "admin": aws.api_keys.create_key("default", ["read", "restart"], name="admin", now=now)[0],
        "reader": aws.api_keys.create_key("default", ["read"], name="reader", now=now)[0],
        "other": aws.api_keys.create_key("globex", ["read", "restart"], name="globex", now=now)[0],
    }
    return ApiClient(LocalApiGateway(aws), keys)


@pytest.fixture(autouse=True)
def _restore_log_levels() -> Iterator[None]:
    """CLI commands quiet the logs process-wide; later tests read log records again."""
    import logging

    from restarter.observability import logger

    names = [logger.name, "", "moto"]
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


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
