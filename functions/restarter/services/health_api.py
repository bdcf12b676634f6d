"""The cluster health API: the last report of every instance, and a health check on demand.

`POST /v1/clusters/{id}/health-check` sends the health script to the instances and answers at
once (a check takes seconds to a minute: longer than an API call should wait); the answer
names the check. `GET /v1/clusters/{id}/health` collects a finished check when it reads (so no
worker is needed), stores its reports and answers them, or says the check is still running.
"""

from __future__ import annotations

import secrets

from restarter.domain.gpu.records import ClusterHealth, PendingHealthCheck, summarize
from restarter.domain.gpu.report import GpuExpectation
from restarter.domain.models import Cluster, format_time
from restarter.domain.rules import ensure_health_checkable
from restarter.observability import logger
from restarter.services.gpu_health import gpu_expectation, node_records, send_health_command, store_reports
from restarter.services.restart_api import visible_cluster
from restarter.wiring import Dependencies

AUDIT_ACTION = "cluster.health_check"


def cluster_health(deps: Dependencies, tenant_id: str, cluster_id: str) -> ClusterHealth:
    cluster = visible_cluster(deps, tenant_id, cluster_id)
    pending = deps.health.pending(cluster.id)
    if pending is not None and _collect(deps, cluster, pending):
        pending = None
    return summarize(cluster.id, deps.health.reports(cluster.id), pending)


def start_health_check(deps: Dependencies, tenant_id: str, cluster_id: str, requested_by: str) -> PendingHealthCheck:
    """Send the health script now; the check already running is answered instead of a second one."""
    cluster = visible_cluster(deps, tenant_id, cluster_id)
    running = deps.health.pending(cluster.id)
    if running is not None and not _collect(deps, cluster, running):
        return running
    ensure_health_checkable(cluster)
    expected = gpu_expectation(deps.provider, cluster.instance_type)
    command_id = send_health_command(deps.provider, cluster, expected)
    check = PendingHealthCheck(
        cluster_id=cluster.id,
        check_id=f"hc_{secrets.token_hex(8)}",
        command_id=command_id,
        instance_ids=list(cluster.instance_ids),
        requested_by=requested_by,
        started_at=format_time(deps.clock.now()),
        expected_gpus=expected.count,
        expected_model=expected.model,
    )
    if not deps.health.put_pending(check):  # another call started one meanwhile: answer that one
        return deps.health.pending(cluster.id) or check
    deps.audit.record(
        cluster.id,
        AUDIT_ACTION,
        requested_by,
        "started",
        deps.clock.now(),
        check_id=check.check_id,
        command_id=command_id,
    )
    logger.info("health check started", cluster_id=cluster.id, check_id=check.check_id, command_id=command_id)
    return check


def _collect(deps: Dependencies, cluster: Cluster, pending: PendingHealthCheck) -> bool:
    """Store the check's reports if its command has finished everywhere (True), else leave it."""
    invocations = deps.provider.command_invocations(pending.command_id, pending.instance_ids)
    if any(i.pending for i in invocations):
        return False
    expected = GpuExpectation(count=pending.expected_gpus, model=pending.expected_model)
    records = node_records(
        deps.health,
        cluster,
        invocations,
        expected,
        deps.clock.now(),
        source="health_check",
        check_id=pending.check_id,
    )
    store_reports(deps.health, records)
    deps.health.clear_pending(cluster.id, pending.check_id)
    summary = summarize(cluster.id, records)
    deps.audit.record(
        cluster.id,
        AUDIT_ACTION,
        pending.requested_by,
        summary.verdict,
        deps.clock.now(),
        check_id=pending.check_id,
        worst_action=summary.worst_action,
        findings=sorted({f.code for r in records for f in r.findings}),
    )
    return True
