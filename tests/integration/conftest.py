"""Fixtures on the embedded AWS: one engine per test process, reset before each test that asks
for it (a reset empties moto and provisions again: ~0.2 s, against ~1.5 s for a first start),
a seeded GPU fleet, restarts run to their end, published events, the REST API and the
alarm recovery table."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from restarter import wiring
from restarter.adapters.recovery_store import RecoveryStore
from restarter.domain.models import Cluster, PortMapping
from restarter.services.restart_intake import accept_restart
from restarter_local.engine import LocalAws
from restarter_local.fleet import ClusterSpec, seed_cluster
from tests.integration.harness import (
    DEFAULT_TABLE,
    TABLE_ENV,
    ApiClient,
    EventCapture,
    RestartOutcome,
    read_outcome,
)

# Simulated seconds per real second: a 3-minute reboot wait takes 0.3 s.
TIME_SCALE = 600.0


@pytest.fixture(scope="session")
def embedded_aws() -> Iterator[LocalAws]:
    """The process's engine, stopped between tests (tests that start moto themselves, or an
    engine or server of their own, find moto as shipped and empty)."""
    engine = LocalAws(time_scale=TIME_SCALE)
    yield engine
    engine.stop()


@pytest.fixture
def aws(request: pytest.FixtureRequest, embedded_aws: LocalAws) -> Iterator[LocalAws]:
    """The embedded AWS, fresh for this test; `@pytest.mark.time_scale(N)` runs it at another speed."""
    marker = request.node.get_closest_marker("time_scale")
    embedded_aws.reset(time_scale=marker.args[0] if marker else TIME_SCALE)
    try:
        yield embedded_aws
    finally:
        embedded_aws.stop()


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


@pytest.fixture
def recovery(aws: LocalAws, monkeypatch: pytest.MonkeyPatch) -> Iterator[RecoveryStore]:
    """The RecoveryTable: the engine's (once template.yaml declares it) or one created here."""
    name = aws.environment.get(TABLE_ENV) or os.environ.get(TABLE_ENV) or DEFAULT_TABLE
    monkeypatch.setenv(TABLE_ENV, name)
    dynamodb = aws.client("dynamodb")
    if name not in dynamodb.list_tables()["TableNames"]:
        dynamodb.create_table(
            TableName=name,
            AttributeDefinitions=[
                {"AttributeName": "cluster_id", "AttributeType": "S"},
                {"AttributeName": "recovered_at", "AttributeType": "S"},
            ],
            KeySchema=[
                {"AttributeName": "cluster_id", "KeyType": "HASH"},
                {"AttributeName": "recovered_at", "KeyType": "RANGE"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
    wiring.use_alarm_recovery(None)
    yield RecoveryStore(dynamodb, name)
    wiring.use_alarm_recovery(None)
