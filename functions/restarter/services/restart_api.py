"""Use cases behind the REST API: read clusters and restarts of a tenant, restart, cancel, wait,
start a rollout once per idempotency key, delete a schedule.

A tenant sees only its own clusters and restarts; anything else is `NOT_FOUND`, exactly like
something that does not exist, so that ids of other tenants cannot be probed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from restarter.adapters.scheduler import ScheduleGateway
from restarter.domain.errors import ConflictError, InvalidStateError, NotFoundError
from restarter.domain.inventory import InstanceView
from restarter.domain.models import Cluster, RestartRecord, RestartRequest, RestartTarget, format_time
from restarter.domain.rollouts import RolloutRecord, RolloutSpec, rollout_id_for_key
from restarter.domain.schedules import ScheduleView
from restarter.services import rollouts, schedules
from restarter.services.ended_executions import conclude_if_execution_ended
from restarter.services.restart_intake import accept_restart, load_cluster
from restarter.wiring import Dependencies, RolloutDependencies


@dataclass(frozen=True)
class ClusterDetails:
    cluster: Cluster
    instances: list[InstanceView]
    current_restart: RestartRecord | None


def get_cluster(deps: Dependencies, tenant_id: str, cluster_id: str) -> ClusterDetails:
    cluster = load_cluster(deps, cluster_id, tenant_id)
    instances = deps.provider.describe_instances(cluster.instance_ids) if cluster.instance_ids else []
    current = None
    if cluster.current_restart_id:
        stored = deps.restarts.get(cluster.current_restart_id)
        current = stored[0] if stored else None
    return ClusterDetails(cluster, instances, current)


def visible_cluster(deps: Dependencies, tenant_id: str, cluster_id: str) -> Cluster:
    """The tenant's cluster, or `NOT_FOUND` (also for another tenant's)."""
    return load_cluster(deps, cluster_id, tenant_id)


def unchanged_configuration_notes(cluster: Cluster, request: RestartRequest, target: RestartTarget) -> list[str]:
    """Requested changes that change nothing, said out loud instead of silently dropped.

    `cpu_cores` and `memory_gb` are minimums: the restart picks the smallest type of the family
    that meets them, which may be the current one. The seed's example asks a p4d.24xlarge (96
    vCPUs, 1152 GiB) for 64 and 512: already met, so the instance type stays.
    """
    notes: list[str] = []
    config = request.update_configuration
    if config is not None and config.changes_hardware() and target.instance_type is None:
        met = [
            f"{name} {wanted} (has {has})"
            for name, wanted, has in (
                ("cpu_cores", config.cpu_cores, cluster.vcpus),
                ("memory_gb", config.memory_gb, cluster.memory_gb),
                ("gpu_count", config.gpu_count, cluster.gpu_count),
            )
            if wanted is not None
        ]
        notes.append(
            f"update_configuration: the current instance type {cluster.instance_type} already meets the requested "
            f"{', '.join(met)}; instance type unchanged"
        )
    if config is not None and config.storage_gb is not None and target.storage_gb is None:
        notes.append(f"update_configuration.storage_gb: storage is already {cluster.storage_gb} GB; unchanged")
    if config is not None and config.region is not None and config.region == cluster.region:
        notes.append(f"update_configuration.region: the cluster is already in {cluster.region}; unchanged")
    if request.update_docker_image is not None and target.image is None:
        notes.append(f"update_docker_image: the cluster already runs {request.update_docker_image}; unchanged")
    return notes


def list_clusters(
    deps: Dependencies, tenant_id: str, *, status: str | None = None, label: str | None = None
) -> list[ClusterDetails]:
    """The tenant's clusters with their current restart (instances are not described: a list
    stays one read per cluster). `label` is `key=value` (or `key` alone for any value)."""
    key, _, value = (label or "").partition("=")
    found = []
    for cluster in deps.clusters.list_all():
        if cluster.tenant_id != tenant_id:
            continue
        if status and cluster.status != status:
            continue
        if key and (key not in cluster.labels or (value and cluster.labels[key] != value)):
            continue
        found.append(cluster)
    listed = []
    for cluster in found:
        current = deps.restarts.get(cluster.current_restart_id) if cluster.current_restart_id else None
        listed.append(ClusterDetails(cluster, [], current[0] if current else None))
    return listed


def accept_api_restart(
    deps: Dependencies, *, cluster_id: str, tenant_id: str, requested_by: str, body: dict[str, Any]
) -> tuple[RestartRecord, list[str]]:
    """Accept a restart asked through the API; with the notes on requested changes that change
    nothing (`unchanged_configuration_notes`).

    Another tenant's cluster is refused here, before the intake, which would audit the refusal in
    that cluster's trail (the tenant's own trail gets it from the API's request audit).
    """
    cluster = visible_cluster(deps, tenant_id, cluster_id)
    request = RestartRequest.model_validate(body)
    record = accept_restart(deps, cluster_id, request, trigger="api", requested_by=requested_by, tenant_id=tenant_id)
    return record, unchanged_configuration_notes(cluster, request, record.target)


def get_restart(deps: Dependencies, tenant_id: str, restart_id: str) -> RestartRecord:
    stored = deps.restarts.get(restart_id)
    if stored is None or stored[0].tenant_id != tenant_id:
        raise NotFoundError("Restart not found", {"restart_id": restart_id})
    return stored[0]


def list_restarts(
    deps: Dependencies, tenant_id: str, cluster_id: str, *, limit: int, cursor: str | None
) -> tuple[list[RestartRecord], str | None]:
    load_cluster(deps, cluster_id, tenant_id)
    return deps.restarts.list_for_cluster(cluster_id, limit=limit, cursor=cursor)


def cancel_restart(deps: Dependencies, tenant_id: str, restart_id: str, requested_by: str) -> RestartRecord:
    """Ask the running execution to stop; its next step turns into cleanup (rollback, lock).

    The execution writes the same record at every step, so the flag is set with a
    read-modify-write that re-applies after a lost race instead of answering 409.
    """
    newly_requested: list[bool] = []
    ended: list[RestartRecord] = []

    def request_cancel(record: RestartRecord) -> None:
        if record.tenant_id != tenant_id:
            raise NotFoundError("Restart not found", {"restart_id": restart_id})
        if record.is_terminal:
            ended[:] = [record]
            raise InvalidStateError(
                "Restart has already ended",
                {"restart_id": restart_id, "current_status": record.status, "allowed_states": ["restarting"]},
            )
        newly_requested[:] = [record.cancel_requested_at is None]
        if record.cancel_requested_at is None:
            record.cancel_requested_at = format_time(deps.clock.now())
            record.cancel_requested_by = requested_by

    try:
        record = deps.restarts.update(restart_id, request_cancel)
    except InvalidStateError as exc:
        if ended:  # the tenant's own restart: its cluster's trail shows the refused cancel
            deps.audit.record(
                ended[0].cluster_id,
                "restart.cancel_requested",
                requested_by,
                "refused",
                deps.clock.now(),
                restart_id=restart_id,
                error_code=exc.code,
                error=exc.message,
                current_status=ended[0].status,
            )
        raise
    if newly_requested == [True]:
        deps.audit.record(
            record.cluster_id,
            "restart.cancel_requested",
            requested_by,
            "accepted",
            deps.clock.now(),
            restart_id=restart_id,
            phase=record.progress.phase,
        )
    # an execution that already ended would never see the flag: finish the restart here
    conclude_if_execution_ended(deps, record)
    return record


def record_refused_restart(
    deps: Dependencies, cluster_id: str, tenant_id: str, requested_by: str, code: str, message: str
) -> None:
    """Audit a restart request refused before the intake saw it (body validation, scope) in the
    cluster's trail, if the cluster is the tenant's: another tenant's trail never shows the
    probes of this one (`record_api_request` keeps those in this tenant's own trail)."""
    cluster = deps.clusters.get(cluster_id)
    if cluster is None or cluster.tenant_id != tenant_id:
        return
    deps.audit.record(
        cluster_id,
        "restart.requested",
        requested_by,
        "refused",
        deps.clock.now(),
        trigger="api",
        error_code=code,
        error=message,
    )


def tenant_trail(tenant_id: str | None) -> str:
    """The audit key of a tenant's request trail (`tenant:-` for a request with no tenant)."""
    return f"tenant:{tenant_id or '-'}"


def record_api_request(
    deps: Dependencies,
    *,
    tenant_id: str | None,
    requested_by: str,
    method: str,
    path: str,
    status: int,
    error_code: str | None,
    request_id: str,
) -> None:
    """One API request in its tenant's trail: outcome `accepted` (2xx/3xx), `refused` (4xx) or `failed` (5xx)."""
    outcome = "accepted" if status < 400 else "refused" if status < 500 else "failed"
    deps.audit.record(
        tenant_trail(tenant_id),
        "api.request",
        requested_by,
        outcome,
        deps.clock.now(),
        tenant_id=tenant_id,
        method=method,
        path=path,
        status=status,
        error_code=error_code,
        request_id=request_id,
    )


@dataclass(frozen=True)
class WaitResult:
    record: RestartRecord
    finished: bool
    waited_seconds: float


def wait_until_finished(
    deps: Dependencies,
    restart_id: str,
    budget_seconds: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    poll_seconds: float = 0.25,
) -> WaitResult:
    """Hold an API answer until the restart ends or the wait budget (real seconds) runs out.

    The step that ends a restart writes the record, then the cluster, then releases the lock: the
    answer waits for all three, so a caller that reads the cluster or restarts again at once sees
    the restart's end, not the moment between two writes."""
    started = time.monotonic()
    while True:
        stored = deps.restarts.get(restart_id)
        if stored is None:
            raise NotFoundError("Restart not found", {"restart_id": restart_id})
        record = stored[0]
        waited = time.monotonic() - started
        finished = record.is_terminal and _concluded(deps, record)
        if finished or waited >= budget_seconds:
            return WaitResult(record, record.is_terminal, round(waited, 2))
        sleep(min(poll_seconds, max(0.0, budget_seconds - waited)))


def _concluded(deps: Dependencies, record: RestartRecord) -> bool:
    """The ended restart no longer holds its cluster: cluster written and lock released."""
    cluster = deps.clusters.get(record.cluster_id)
    if cluster is not None and cluster.current_restart_id == record.id:
        return False
    return deps.locks.holder(record.cluster_id) != record.id


@dataclass(frozen=True)
class RestartFailure:
    """How the API answers a restart that ended without `ready`, waited for with `wait_for_ready`."""

    http_status: int
    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


# a restart's end (other than ready) -> the API's (code, HTTP status); any other end is a failure
_ENDED_WITHOUT_READY: dict[str, tuple[str, int]] = {
    "timed_out": ("RESTART_TIMED_OUT", 504),
    "cancelled": ("RESTART_CANCELLED", 409),
}


def failure_of(record: RestartRecord) -> RestartFailure | None:
    """None while the restart runs or once it is ready; else the error the API answers."""
    if record.status in ("ready", "restarting"):
        return None
    code, status = _ENDED_WITHOUT_READY.get(record.status, ("RESTART_FAILED", 502))
    details = {
        "restart_id": record.id,
        "status": record.status,
        "phase": record.error.phase if record.error else None,
        "reason": record.error.message if record.error else None,
        "rollback_notes": record.rollback_notes,
    }
    return RestartFailure(status, code, f"The restart ended {record.status}", details)


@dataclass(frozen=True)
class ReadyWait:
    """A restart after the API's `wait_for_ready` wait: ended (`finished`) or still running."""

    record: RestartRecord
    cluster_status: str
    finished: bool
    waited_seconds: float
    failure: RestartFailure | None


def wait_for_ready(deps: Dependencies, restart_id: str) -> ReadyWait:
    """Hold the answer until the restart ends or the API's wait budget
    (`api_wait_budget_seconds`, below API Gateway's 29 s) runs out."""
    waited = wait_until_finished(deps, restart_id, deps.settings.api_wait_budget_seconds)
    record = waited.record
    cluster = deps.clusters.get(record.cluster_id)
    return ReadyWait(
        record, cluster.status if cluster else "restarting", waited.finished, waited.waited_seconds, failure_of(record)
    )


def start_rollout(
    rd: RolloutDependencies,
    spec: RolloutSpec,
    *,
    tenant_id: str,
    requested_by: str,
    idempotency_key: str | None,
) -> tuple[RolloutRecord, bool]:
    """Start a rollout; with an idempotency key, a retry answers the rollout it started (`False`),
    and the same key with another spec is `CONFLICT`."""
    rollout_id = rollout_id_for_key(f"{tenant_id}#{idempotency_key}") if idempotency_key else None
    record, created = rollouts.create_rollout(
        rd, spec, requested_by=requested_by, tenant_id=tenant_id, trigger="api", rollout_id=rollout_id
    )
    if not created and record.spec != spec:
        raise ConflictError(
            "This Idempotency-Key was used with a different request",
            {"header": "Idempotency-Key", "rollout_id": record.rollout_id},
        )
    return record, created


def delete_schedule(
    deps: Dependencies, gateway: ScheduleGateway, tenant_id: str, name: str, requested_by: str
) -> ScheduleView:
    """Delete the tenant's schedule and answer what it was (`NOT_FOUND` before anything changes)."""
    view = schedules.get_schedule(gateway, tenant_id, name)
    schedules.delete_schedule(deps, gateway, tenant_id, name, requested_by)
    return view
