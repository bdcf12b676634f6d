"""The answers of the health and recovery-circuit routes (their data are the domain's models)."""

from __future__ import annotations

from restarter.domain.circuit_breaker import BreakerState
from restarter.domain.gpu.records import ClusterHealth, PendingHealthCheck
from restarter.domain.recovery import RecoveryOutcome
from restarter.handlers.api.models import ApiModel, Meta


class ClusterHealthResponse(ApiModel):
    success: bool = True
    data: ClusterHealth
    meta: Meta


class HealthCheckStartedResponse(ApiModel):
    success: bool = True
    data: PendingHealthCheck
    meta: Meta


class CircuitResponse(ApiModel):
    success: bool = True
    data: BreakerState
    meta: Meta


class ResumedRecovery(ApiModel):
    action: str
    cluster_id: str | None = None
    restart_id: str | None = None
    rung: str | None = None
    reasons: list[str] = []


class CircuitClosedData(ApiModel):
    circuit: BreakerState
    resumed: list[ResumedRecovery]


class CircuitClosedResponse(ApiModel):
    success: bool = True
    data: CircuitClosedData
    meta: Meta


def resumed_view(outcome: RecoveryOutcome) -> ResumedRecovery:
    return ResumedRecovery(
        action=outcome.action,
        cluster_id=outcome.cluster_id,
        restart_id=outcome.restart_id,
        rung=outcome.rung,
        reasons=outcome.reasons,
    )


class DiagnosticCheck(ApiModel):
    name: str
    status: str
    detail: str


class DiagnosticsData(ApiModel):
    cluster_id: str | None
    checks: list[DiagnosticCheck]
    summary: dict[str, int]


class DiagnosticsResponse(ApiModel):
    success: bool = True
    data: DiagnosticsData
    meta: Meta
