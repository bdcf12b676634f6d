"""The health reports restarter keeps: the last assessment of every instance of a cluster.

A report is written by every health check, the one a restart runs in `health_checks` and the
one an operator asks for (`POST /v1/clusters/{id}/health-check`). It is what
`GET /v1/clusters/{id}/health` answers, what alarm recovery reads to pick the ladder's rung, and
where "GPUs were missing last time too" is remembered (`missing_streak`): a GPU still missing
after a reboot needs a new host.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from restarter.domain.gpu.findings import ACTIONS, Action, Finding
from restarter.domain.gpu.report import NodeAssessment

ReportSource = Literal["restart", "health_check"]
Verdict = Literal["healthy", "unhealthy", "unknown"]


class NodeHealthRecord(BaseModel):
    """One instance's last health report."""

    model_config = ConfigDict(defer_build=True)

    cluster_id: str
    instance_id: str
    taken_at: str
    source: ReportSource
    restart_id: str | None = None
    check_id: str | None = None
    # how many reports in a row (this one included) found GPUs missing
    missing_streak: int = 0
    # the health command itself did not answer (agent offline, command failed): no assessment
    command_status: str = "Success"
    assessment: NodeAssessment | None = None

    @property
    def findings(self) -> list[Finding]:
        return list(self.assessment.findings) if self.assessment else []

    @property
    def verdict(self) -> Verdict:
        if self.assessment is None:
            return "unknown"
        return "healthy" if self.assessment.ready else "unhealthy"


class PendingHealthCheck(BaseModel):
    """An on-demand health check whose command is still running."""

    model_config = ConfigDict(defer_build=True)

    cluster_id: str
    check_id: str
    command_id: str
    instance_ids: list[str]
    requested_by: str
    started_at: str
    expected_gpus: int
    expected_model: str | None = None


class ClusterHealth(BaseModel):
    """What `GET /v1/clusters/{id}/health` answers."""

    model_config = ConfigDict(defer_build=True)

    cluster_id: str
    verdict: Verdict
    worst_action: Action | None = None
    checked_at: str | None = None
    instances: list[NodeHealthRecord] = Field(default_factory=list)
    pending_check: PendingHealthCheck | None = None


def missing_streak(previous: NodeHealthRecord | None, assessment: NodeAssessment | None) -> int:
    """Reports in a row that found GPUs missing: a second one in a row means stop/start."""
    if assessment is None or assessment.visible_gpus >= assessment.expected_gpus:
        return 0
    return (previous.missing_streak if previous else 0) + 1


def worst_of(records: Iterable[NodeHealthRecord]) -> Action | None:
    worst: Action | None = None
    for record in records:
        for finding in record.findings:
            if worst is None or ACTIONS.index(finding.action) > ACTIONS.index(worst):
                worst = finding.action
    return worst


def summarize(
    cluster_id: str, records: list[NodeHealthRecord], pending: PendingHealthCheck | None = None
) -> ClusterHealth:
    """The cluster's verdict: unhealthy if any instance is, unknown if any has no assessment."""
    verdicts = {r.verdict for r in records}
    verdict: Verdict = (
        "unhealthy" if "unhealthy" in verdicts else "unknown" if not records or "unknown" in verdicts else "healthy"
    )
    return ClusterHealth(
        cluster_id=cluster_id,
        verdict=verdict,
        worst_action=worst_of(records),
        checked_at=max((r.taken_at for r in records), default=None),
        instances=sorted(records, key=lambda r: r.instance_id),
        pending_check=pending,
    )
