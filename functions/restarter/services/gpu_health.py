"""Health checks of a cluster's GPU nodes: turning the health command's answers into reports.

Used by the restart's `health_checks` phase and by the on-demand check of the API. The
expected GPUs come from the instance type (`DescribeInstanceTypes` GpuInfo), never from what a
node says about itself; "GPUs were missing last time too" comes from the stored report.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit

from restarter.domain.gpu.findings import Finding
from restarter.domain.gpu.records import NodeHealthRecord, ReportSource, missing_streak
from restarter.domain.gpu.report import GpuExpectation, assess_node, parse_health_output
from restarter.domain.health import workload_problems
from restarter.domain.inventory import CommandInvocation
from restarter.domain.models import Cluster, format_time
from restarter.observability import logger, metrics
from restarter.services.restart.context import port_args

if TYPE_CHECKING:
    from restarter.adapters.health_store import HealthReportStore
    from restarter.adapters.provider import Provider

HEALTH_COMMAND = "health_check"
HEALTH_COMMAND_TIMEOUT_SECONDS = 180


def gpu_expectation(provider: Provider, instance_type: str, gpu_count: int | None = None) -> GpuExpectation:
    """What the instance type has (`gpu_count`: the restart's target, when it changes the type)."""
    info = provider.describe_instance_type(instance_type)
    return GpuExpectation(count=gpu_count if gpu_count is not None else info.gpu_count, model=info.gpu_name)


def send_health_command(provider: Provider, cluster: Cluster, expected: GpuExpectation) -> str:
    return provider.run_command(
        cluster.instance_ids,
        HEALTH_COMMAND,
        {"ports": port_args(cluster.container), "expected_gpus": expected.count},
        timeout_seconds=HEALTH_COMMAND_TIMEOUT_SECONDS,
    )


def node_records(
    store: HealthReportStore | None,
    cluster: Cluster,
    invocations: Iterable[CommandInvocation],
    expected: GpuExpectation,
    now: datetime,
    *,
    source: ReportSource,
    restart_id: str | None = None,
    check_id: str | None = None,
) -> list[NodeHealthRecord]:
    """One report per answered instance (not stored: the caller decides when a report is final)."""
    records = []
    for inv in invocations:
        previous = store.report(cluster.id, inv.instance_id) if store else None
        assessment = None
        if inv.status == "Success":
            assessment = assess_node(
                inv.instance_id,
                parse_health_output(inv.stdout),
                expected,
                missing_before=bool(previous and previous.missing_streak > 0),
            )
        records.append(
            NodeHealthRecord(
                cluster_id=cluster.id,
                instance_id=inv.instance_id,
                taken_at=format_time(now),
                source=source,
                restart_id=restart_id,
                check_id=check_id,
                missing_streak=missing_streak(previous, assessment),
                command_status=inv.status,
                assessment=assessment,
            )
        )
    return records


def workload_of(invocation: CommandInvocation, cluster: Cluster, image: str) -> list[str]:
    """The workload section's problems (container state, ports), as the old check reported them."""
    report = parse_health_output(invocation.stdout)
    section = report.sections.get("workload")
    body = section.body if section is not None else ""
    return workload_problems(body, expected_image=image, ports=cluster.container.port_mappings)


def store_reports(store: HealthReportStore | None, records: Iterable[NodeHealthRecord]) -> None:
    """Keep the reports and publish one metric per finding class (EMF), to alarm on."""
    for record in records:
        if store is not None:
            store.put_report(record)
        for finding in record.findings:
            metrics.add_metric(name=f"GpuFinding_{finding.code}", unit=MetricUnit.Count, value=finding.count)
            metrics.add_metric(name=f"GpuAction_{finding.action}", unit=MetricUnit.Count, value=1)
        if record.findings:
            logger.info(
                "gpu health findings",
                cluster_id=record.cluster_id,
                instance_id=record.instance_id,
                findings=[f.code for f in record.findings],
                worst_action=record.assessment.worst_action if record.assessment else None,
            )


def findings_detail(records: Iterable[NodeHealthRecord]) -> list[dict[str, Any]]:
    """The findings as `error.details.findings` lists them: each with its instance."""
    return [finding_entry(r.instance_id, f) for r in records for f in r.findings]


def finding_entry(instance_id: str, finding: Finding) -> dict[str, Any]:
    return {"instance_id": instance_id, **finding.model_dump(mode="json", exclude_none=True)}
