"""What a phase step works with: the record, the cluster, the cloud, the clock and its own state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, cast

from restarter.adapters.clock import Clock
from restarter.adapters.health_store import HealthReportStore
from restarter.adapters.provider import Provider
from restarter.domain.errors import InsufficientCapacityError, PhaseFailedError, RestarterError
from restarter.domain.inventory import InstanceView
from restarter.domain.models import Cluster, ContainerSpec, RestartRecord, VolumeInfo, format_time, parse_time
from restarter.domain.outcome import failure_summary
from restarter.domain.planning import CAPACITY_SUGGESTION, capacity_wait
from restarter.services.restart.state import PhaseState, StateT

START_SERVICES_TIMEOUT_SECONDS = 600


@dataclass
class PhaseContext(Generic[StateT]):
    """One step of one phase. Phases change `record`, `cluster` and `state`; the runner saves them."""

    record: RestartRecord
    cluster: Cluster
    provider: Provider
    clock: Clock
    state: StateT
    attempt: int = 0
    # where health checks keep each instance's last report (None: not kept)
    health: HealthReportStore | None = None

    def now(self) -> datetime:
        return self.clock.now()

    def instances(self) -> list[InstanceView]:
        return self.provider.describe_instances(self.cluster.instance_ids)

    def volumes(self) -> list[VolumeInfo]:
        return [VolumeInfo.from_view(v) for v in self.provider.describe_volumes(self.cluster.instance_ids)]

    def instances_ready(self) -> bool:
        """Running, status checks passed, SSM agent online: ready to take commands."""
        if not all(i.status_checks_ok for i in self.instances()):
            return False
        return all(self.provider.agents_online(self.cluster.instance_ids).values())

    def start_downtime(self) -> None:
        """The first action that interrupts the workload starts the downtime clock."""
        self.record.downtime_started_at = self.record.downtime_started_at or format_time(self.now())

    def start_services(self, spec: ContainerSpec) -> str:
        """Send the command that starts the workload container with `spec` on every instance."""
        return self.provider.run_command(
            self.cluster.instance_ids,
            "start_services",
            {
                "image": spec.image,
                "ports": port_args(spec),
                "environment_parameter": spec.environment_parameter,
            },
            timeout_seconds=START_SERVICES_TIMEOUT_SECONDS,
        )

    def command_finished(self, command_id: str, instance_ids: list[str], phase: str, failure: str) -> bool:
        """True once the command succeeded everywhere; a failure anywhere fails the phase."""
        invocations = self.provider.command_invocations(command_id, instance_ids)
        if any(i.pending for i in invocations):
            return False
        failed = [i for i in invocations if i.status != "Success"]
        if failed:
            raise PhaseFailedError(failure, {"phase": phase, "instances": failure_summary(failed)})
        return True


def start_instances(ctx: PhaseContext[Any], instance_ids: list[str]) -> bool:
    """Start the instances; False while EC2 has no capacity for their type (try again at the
    next poll, with a growing wait). When the restart's deadline leaves no time for another
    try, the phase fails naming the instances left stopped and what to do about it."""
    state = cast(PhaseState, ctx.state)
    try:
        ctx.provider.start(instance_ids)
    except InsufficientCapacityError as exc:
        state.capacity_refusals += 1
        left = (parse_time(ctx.record.deadline) - ctx.now()).total_seconds()
        wait = capacity_wait(state.capacity_refusals, left)
        if wait is None:
            raise InsufficientCapacityError(
                "EC2 has no capacity to start the instances; they are stopped",
                capacity_failure_details(ctx, instance_ids, exc, state.capacity_refusals),
            ) from exc
        state.poll_seconds = wait
        return False
    state.capacity_refusals = 0
    return True


def capacity_failure_details(
    ctx: PhaseContext[Any], instance_ids: list[str], exc: RestarterError, attempts: int
) -> dict[str, Any]:
    return {
        "aws_error_code": exc.details.get("aws_error_code", "InsufficientInstanceCapacity"),
        "instance_type": ctx.record.target.instance_type or ctx.cluster.instance_type,
        "stopped_instances": list(instance_ids),
        "attempts": attempts,
        "suggestion": CAPACITY_SUGGESTION,
    }


def port_args(spec: ContainerSpec) -> list[dict[str, Any]]:
    return [
        {"internal_port": p.internal_port, "external_port": p.external_port, "protocol": p.protocol}
        for p in spec.port_mappings
    ]


def mark_applied(record: RestartRecord, category: str) -> None:
    """Move the configuration lines of one part of the restart from pending to applied."""
    for line in record.change_lines.get(category, []):
        if line in record.configuration_updates.pending:
            record.configuration_updates.pending.remove(line)
            record.configuration_updates.applied.append(line)


def close_record(record: RestartRecord, now: datetime) -> None:
    """Stamp the end of the restart, its duration and its downtime."""
    record.restart_completed_at = format_time(now)
    started = parse_time(record.restart_initiated_at)
    record.restart_duration_seconds = int((now - started).total_seconds())
    if record.downtime_started_at:
        end = parse_time(record.downtime_ended_at) if record.downtime_ended_at else now
        record.downtime_seconds = int((end - parse_time(record.downtime_started_at)).total_seconds())
