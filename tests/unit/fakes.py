"""In-memory stand-ins for the adapters the services use: the stores, the lock, the audit log,
the event bus, the executions, a clock that moves only when a test moves it, and (in
fake_provider.py) a fake cloud. No AWS, no moto: a restart runs through them in milliseconds.

Stores keep JSON, as DynamoDB keeps the records' bodies, so what a test reads back went
through the same serialisation as in production.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from restarter.adapters.provider import Provider
from restarter.domain.errors import ConflictError, InvalidStateError, NotFoundError
from restarter.domain.gpu.records import NodeHealthRecord, PendingHealthCheck
from restarter.domain.models import Cluster, ContainerSpec, PortMapping, RestartRecord, VolumeInfo, format_time
from restarter.settings import Settings
from restarter.wiring import Dependencies
from tests.unit.fake_provider import INSTANCE_TYPES, FakeProvider

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


class FixedClock:
    """Time stands still until a test (or the state machine driver, for a Wait) moves it."""

    def __init__(self, now: datetime = START) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


# ---------------------------------------------------------------- records


class InMemoryClusterStore:
    def __init__(self) -> None:
        self.bodies: dict[str, str] = {}

    def get(self, cluster_id: str) -> Cluster | None:
        body = self.bodies.get(cluster_id)
        return Cluster.model_validate_json(body) if body else None

    def put(self, cluster: Cluster) -> None:
        self.bodies[cluster.id] = cluster.model_dump_json()

    def list_all(self) -> list[Cluster]:
        return [Cluster.model_validate_json(b) for _, b in sorted(self.bodies.items())]


class InMemoryRestartStore:
    """Versioned like the DynamoDB store: a write with a stale version is a ConflictError."""

    def __init__(self) -> None:
        self.bodies: dict[str, tuple[str, int]] = {}

    def get(self, restart_id: str) -> tuple[RestartRecord, int] | None:
        stored = self.bodies.get(restart_id)
        return (RestartRecord.model_validate_json(stored[0]), stored[1]) if stored else None

    def put(self, record: RestartRecord, expected_version: int | None) -> int:
        current = self.bodies.get(record.id)
        if (current[1] if current else None) != expected_version:
            raise ConflictError("The restart record changed underneath this update", {"restart_id": record.id})
        version = (expected_version or 0) + 1
        self.bodies[record.id] = (record.model_dump_json(), version)
        return version

    def update(self, restart_id: str, change: Callable[[RestartRecord], None]) -> RestartRecord:
        stored = self.get(restart_id)
        if stored is None:
            raise NotFoundError("Restart not found", {"restart_id": restart_id})
        record, version = stored
        change(record)
        self.put(record, version)
        return record

    def list_for_cluster(
        self, cluster_id: str, limit: int = 20, cursor: str | None = None
    ) -> tuple[list[RestartRecord], str | None]:
        records = [RestartRecord.model_validate_json(b) for b, _ in self.bodies.values()]
        mine = sorted((r for r in records if r.cluster_id == cluster_id), key=lambda r: r.restart_initiated_at)
        return mine[::-1][:limit], None


class InMemoryClusterLock:
    def __init__(self) -> None:
        self.held: dict[str, tuple[str, datetime]] = {}

    def acquire(self, cluster_id: str, owner: str, now: datetime, expires_at: datetime) -> None:
        held = self.held.get(cluster_id)
        if held is not None and held[1] >= now:
            raise InvalidStateError(
                "Cluster cannot be restarted in current state", {"current_status": "restarting", "restart_id": held[0]}
            )
        self.held[cluster_id] = (owner, expires_at)

    def release(self, cluster_id: str, owner: str) -> bool:
        held = self.held.get(cluster_id)
        if held is None or held[0] != owner:
            return False
        del self.held[cluster_id]
        return True

    def holder(self, cluster_id: str) -> str | None:
        held = self.held.get(cluster_id)
        return held[0] if held else None


class InMemoryAuditLog:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def record(self, entity_id: str, action: str, actor: str, outcome: str, now: datetime, **details: Any) -> None:
        self.items.append(
            {
                "entity_id": entity_id,
                "recorded_at": format_time(now),
                "action": action,
                "actor": actor,
                "outcome": outcome,
                "details": details,
            }
        )

    def entries(self, entity_id: str) -> list[dict[str, Any]]:
        return [{k: v for k, v in i.items() if k != "entity_id"} for i in self.items if i["entity_id"] == entity_id]


class InMemoryHealthStore:
    def __init__(self) -> None:
        self.items: dict[tuple[str, str], NodeHealthRecord] = {}
        self.checks: dict[str, PendingHealthCheck] = {}

    def put_report(self, record: NodeHealthRecord) -> None:
        self.items[(record.cluster_id, record.instance_id)] = record.model_copy(deep=True)

    def reports(self, cluster_id: str) -> list[NodeHealthRecord]:
        return [r for (c, _), r in sorted(self.items.items()) if c == cluster_id]

    def report(self, cluster_id: str, instance_id: str) -> NodeHealthRecord | None:
        return self.items.get((cluster_id, instance_id))

    def put_pending(self, check: PendingHealthCheck) -> bool:
        if check.cluster_id in self.checks:
            return False
        self.checks[check.cluster_id] = check
        return True

    def pending(self, cluster_id: str) -> PendingHealthCheck | None:
        return self.checks.get(cluster_id)

    def clear_pending(self, cluster_id: str, check_id: str) -> None:
        if cluster_id in self.checks and self.checks[cluster_id].check_id == check_id:
            del self.checks[cluster_id]


class InMemoryEventPublisher:
    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, Any]]] = []

    def publish(self, detail_type: str, detail: dict[str, Any], resources: list[str] | None = None) -> bool:
        self.published.append((detail_type, detail))
        return True

    def of_type(self, detail_type: str) -> list[dict[str, Any]]:
        return [d for t, d in self.published if t == detail_type]


class FakeExecutions:
    """Records the executions intake starts; nothing runs them (the test drives the steps)."""

    MACHINE = "arn:aws:states:us-east-1:123456789012:stateMachine:restarter-restart"

    def __init__(self) -> None:
        self.started: dict[str, dict[str, Any]] = {}
        self.statuses: dict[str, str] = {}

    def execution_arn(self, name: str) -> str:
        prefix, _, machine = self.MACHINE.rpartition(":stateMachine:")
        return f"{prefix}:execution:{machine}:{name}"

    def start(self, name: str, payload: dict[str, Any]) -> str:
        arn = self.execution_arn(name)
        self.started[name] = payload
        self.statuses[arn] = "RUNNING"
        return arn

    def start_once(self, name: str, payload: dict[str, Any]) -> str:
        return self.execution_arn(name) if name in self.started else self.start(name, payload)

    def status(self, execution_arn: str) -> str:
        return self.statuses.get(execution_arn, "RUNNING")

    def is_running(self, execution_arn: str) -> bool:
        return self.status(execution_arn) == "RUNNING"

    def stop(self, execution_arn: str, cause: str) -> None:
        self.statuses[execution_arn] = "ABORTED"


# ---------------------------------------------------------------- all of it


@dataclass
class FakeWorld:
    """Every fake, and the `Dependencies` a service gets built from them."""

    provider: FakeProvider = field(default_factory=FakeProvider)
    clusters: InMemoryClusterStore = field(default_factory=InMemoryClusterStore)
    restarts: InMemoryRestartStore = field(default_factory=InMemoryRestartStore)
    locks: InMemoryClusterLock = field(default_factory=InMemoryClusterLock)
    audit: InMemoryAuditLog = field(default_factory=InMemoryAuditLog)
    health: InMemoryHealthStore = field(default_factory=InMemoryHealthStore)
    events: InMemoryEventPublisher = field(default_factory=InMemoryEventPublisher)
    executions: FakeExecutions = field(default_factory=FakeExecutions)
    clock: FixedClock = field(default_factory=FixedClock)

    @property
    def deps(self) -> Dependencies:
        provider: Provider = self.provider
        return Dependencies(
            settings=Settings(state_machine_arn=FakeExecutions.MACHINE),
            clusters=self.clusters,  # type: ignore[arg-type]
            restarts=self.restarts,  # type: ignore[arg-type]
            locks=self.locks,  # type: ignore[arg-type]
            audit=self.audit,  # type: ignore[arg-type]
            health=self.health,  # type: ignore[arg-type]
            provider=provider,
            events=self.events,  # type: ignore[arg-type]
            executions=self.executions,  # type: ignore[arg-type]
            clock=self.clock,
        )

    def seed_cluster(
        self,
        *,
        cluster_id: str = "cluster_abc123",
        instance_type: str = "p4d.24xlarge",
        instance_count: int = 2,
        status: str = "running",
        image: str = "tensorone/pytorch:2.1-cuda12.1",
        environment: dict[str, str] | None = None,
        ports: list[PortMapping] | None = None,
    ) -> Cluster:
        """A cluster whose instances run its container, like the seed's `cluster_abc123`."""
        instance_state = "stopped" if status == "stopped" else "running"
        ids = [self.provider.add_instance(instance_type, state=instance_state) for _ in range(instance_count)]
        ports = ports if ports is not None else [PortMapping(internal_port=8888, external_port=30888)]
        container = ContainerSpec(image=image, port_mappings=ports)
        if environment:
            container.environment_parameter = f"/restarter/clusters/{cluster_id}/environment"
            container.environment_version = self.provider.put_environment(container.environment_parameter, environment)
            container.environment_keys = sorted(environment)
        if status == "running":
            for iid in ids:
                self.provider.apply_op(
                    iid, "start_services", {"image": image, "ports": [p.model_dump() for p in ports]}
                )
        self.provider.calls.clear()
        info = INSTANCE_TYPES[instance_type]
        cluster = Cluster(
            id=cluster_id,
            name="ml-training-cluster",
            region="us-east-1",
            instance_ids=ids,
            instance_type=instance_type,
            gpu_type=info.gpu_name,
            gpu_count=info.gpu_count,
            vcpus=info.vcpus,
            memory_gb=info.memory_gb,
            status=status,  # type: ignore[arg-type]
            container=container,
            volumes=[VolumeInfo.from_view(v) for v in self.provider.describe_volumes(ids)],
            created_at=format_time(self.clock.now()),
        )
        self.clusters.put(cluster)
        return cluster
