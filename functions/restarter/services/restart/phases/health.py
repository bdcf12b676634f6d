"""health_checks: status checks, SSM agent, then the GPU health report of every instance.

A restart is ready only when no instance has a finding that blocks readiness (a GPU reset or
worse: `restarter.domain.gpu.findings`) and the workload answers. What may still be coming up
after a boot (status checks, the agent, GPUs that enumerate late, NVLink training, the
driver, the container and its ports) is checked again until `SETTLE_SECONDS` after the first
check; a finding that waiting cannot fix (an Xid logged since boot, an uncorrectable ECC error,
a pending row remap) fails the phase at once. The final report of each instance is stored (the
cluster's health, and "missing last time too" for the next check); a failure carries the
findings in `error.details.findings`, and cleanup rolls the restart back.
"""

from __future__ import annotations

from typing import Any

from restarter.domain.errors import PhaseFailedError
from restarter.domain.gpu.findings import SETTLING_CODES, Finding
from restarter.domain.gpu.records import NodeHealthRecord
from restarter.domain.gpu.report import GpuExpectation
from restarter.domain.models import format_time, parse_time
from restarter.services.gpu_health import (
    findings_detail,
    gpu_expectation,
    node_records,
    send_health_command,
    store_reports,
    workload_of,
)
from restarter.services.restart.context import PhaseContext
from restarter.services.restart.state import CommandState

# GPUs of p4d/p5 hosts can enumerate a minute or more after the instance reports running
# (driver load, Fabric Manager, NVLink training): look again for up to two minutes.
SETTLE_SECONDS = 120
# and at most this many reports, whatever the clock says
MAX_CHECKS = 8


class HealthState(CommandState):
    first_checked_at: str | None = None
    # when the command being collected was sent: the report is the node as it was then
    sent_at: str | None = None
    checks: int = 0
    # what the instance type has (DescribeInstanceTypes, asked once per phase)
    expected_gpus: int | None = None
    expected_model: str | None = None
    # what the last check found (shown when a restart is explained)
    last_problems: dict[str, Any] | None = None
    # findings that did not block readiness (an application Xid, a throttle), reported
    reported_findings: list[dict[str, Any]] | None = None


def health_checks(ctx: PhaseContext[HealthState]) -> bool:
    state, record, cluster = ctx.state, ctx.record, ctx.cluster
    now = ctx.now()
    state.first_checked_at = state.first_checked_at or format_time(now)
    if state.command_id is None:
        return _send(ctx)
    invocations = ctx.provider.command_invocations(state.command_id, state.instances)
    if any(i.pending for i in invocations):
        return False
    state.checks += 1
    records = node_records(
        ctx.health, cluster, invocations, _expectation(ctx), now, source="restart", restart_id=record.id
    )
    problems: dict[str, list[str]] = {}
    for inv, node in zip(invocations, records, strict=True):
        found = [f"health command {inv.status}"] if inv.status != "Success" else []
        if inv.status == "Success":
            found += [f.summary for f in _blocking(node)]
            found += workload_of(inv, cluster, cluster.container.image)
        if found:
            problems[inv.instance_id] = found
    if not problems:
        state.reported_findings = findings_detail(records) or None
        store_reports(ctx.health, records)
        return True
    state.command_id = None
    _settle(ctx, {"problems": problems}, records)
    return _send(ctx)  # look again at once: the next poll collects it


def _send(ctx: PhaseContext[HealthState]) -> bool:
    """Send the health command once the instances can take it (else wait, within the window)."""
    state, cluster = ctx.state, ctx.cluster
    not_ok = [i.instance_id for i in ctx.instances() if not i.status_checks_ok]
    offline = [iid for iid, ok in ctx.provider.agents_online(cluster.instance_ids).items() if not ok]
    if not_ok or offline:
        state.sent_at = None
        return _settle(ctx, {"status_checks_failed": not_ok, "ssm_agent_offline": offline}, [])
    state.command_id = send_health_command(ctx.provider, cluster, _expectation(ctx))
    state.instances = list(cluster.instance_ids)
    state.sent_at = format_time(ctx.now())
    return False


def _blocking(node: NodeHealthRecord) -> list[Finding]:
    assessment = node.assessment
    if assessment is None or assessment.ready:
        return []
    return [f for f in assessment.findings if f.action != "report"]


def _settle(ctx: PhaseContext[HealthState], problems: dict[str, Any], records: list[NodeHealthRecord]) -> bool:
    """Look again later while waiting may help; fail with the findings when it cannot, or no longer."""
    state = ctx.state
    state.last_problems = problems
    definitive = [f for node in records for f in _blocking(node) if f.code not in SETTLING_CODES]
    assert state.first_checked_at is not None
    # how long the node has had to come up, as the failed report saw it
    seen_at = parse_time(state.sent_at) if state.sent_at and records else ctx.now()
    waited = (seen_at - parse_time(state.first_checked_at)).total_seconds()
    if definitive or waited >= SETTLE_SECONDS or state.checks >= MAX_CHECKS:
        store_reports(ctx.health, records)
        details = {**problems, "checks": state.checks, "waited_seconds": int(waited)}
        findings = findings_detail(records)
        if findings:
            details["findings"] = findings
        raise PhaseFailedError("Health checks failed", details)
    return False


def _expectation(ctx: PhaseContext[HealthState]) -> GpuExpectation:
    """The GPUs of the instance type (the target's when the restart changes it), asked once."""
    state, target = ctx.state, ctx.record.target
    if state.expected_gpus is None:
        expected = gpu_expectation(
            ctx.provider,
            target.instance_type or ctx.cluster.instance_type,
            target.instance_gpu_count if target.instance_type else None,
        )
        state.expected_gpus, state.expected_model = expected.count, expected.model
    return GpuExpectation(count=state.expected_gpus, model=state.expected_model)
