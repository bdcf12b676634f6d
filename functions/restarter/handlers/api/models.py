"""The REST API's response shapes (the seed's contract) and how domain objects fill them.

The models are the OpenAPI schema and the serializer at once, so the committed spec cannot
drift from what the API answers.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from restarter.domain.inventory import InstanceView
from restarter.domain.models import (
    Cluster,
    ConfigurationUpdates,
    PhaseEntry,
    RestartProgress,
    RestartRecord,
    RestartStatus,
)
from restarter.domain.rollouts import ItemResult, MaintenanceWindow, RolloutRecord, summarize
from restarter.domain.schedules import ScheduleView

API_PREFIX = "/v1"


class ApiModel(BaseModel):
    """An answer's shape: its validator and serializer are built when first used (an answer, the
    OpenAPI document), not at import, so the function's cold start does not build all of them."""

    model_config = ConfigDict(defer_build=True)


class ErrorBody(ApiModel):
    code: str = Field(examples=["INVALID_STATE"])
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorEnvelope(ApiModel):
    success: bool = False
    error: ErrorBody


class Meta(ApiModel):
    request_id: str


class CostImpact(ApiModel):
    old_hourly_rate: float | None
    new_hourly_rate: float | None
    rate_change_reason: str | None


class RestartLinks(ApiModel):
    restart: str
    cluster: str
    cancel: str


class RestartAcceptedData(ApiModel):
    """The seed's restart response `data`, plus the restart's id, links and, once ended, its result."""

    id: str = Field(description="The cluster id")
    name: str
    status: str = Field(description="Cluster status: `restarting` while the restart runs")
    restart_id: str
    restart_status: RestartStatus
    restart_initiated_at: str
    estimated_completion_time: str
    restart_type: str
    restart_progress: RestartProgress
    configuration_updates: ConfigurationUpdates
    cost_impact: CostImpact
    links: RestartLinks
    restart_completed_at: str | None = None
    downtime_seconds: int | None = None
    restart_duration_seconds: int | None = None
    configuration_changes: list[str] = Field(default_factory=list)
    error: dict[str, Any] | None = None


class RestartMeta(Meta):
    wait_for_ready: bool
    completed: bool = Field(description="Whether the restart ended within the wait")
    waited_seconds: float = 0.0
    warnings: list[str] = Field(
        default_factory=list,
        description="Requested changes that change nothing, e.g. minimums the current instance type already meets",
    )


class RestartAcceptedResponse(ApiModel):
    success: bool = True
    data: RestartAcceptedData
    meta: RestartMeta


class RestartView(ApiModel):
    id: str
    cluster_id: str
    cluster_name: str
    status: RestartStatus
    restart_type: str
    trigger: str
    requested_by: str
    reason: str | None
    restart_initiated_at: str
    estimated_completion_time: str
    restart_progress: RestartProgress
    configuration_updates: ConfigurationUpdates
    phase_history: list[PhaseEntry]
    restart_completed_at: str | None
    downtime_seconds: int | None
    restart_duration_seconds: int | None
    configuration_changes: list[str]
    cost_impact: CostImpact
    error: dict[str, Any] | None
    rollback_notes: list[str]
    cancel_requested_at: str | None
    links: RestartLinks


class RestartResponse(ApiModel):
    success: bool = True
    data: RestartView
    meta: Meta


class RestartPage(ApiModel):
    restarts: list[RestartView]
    next_token: str | None


class RestartListResponse(ApiModel):
    success: bool = True
    data: RestartPage
    meta: Meta


class SnapshotView(ApiModel):
    id: str
    name: str
    created_at: str


class VolumeView(ApiModel):
    volume_id: str
    instance_id: str
    device_name: str
    size_gb: int
    is_root: bool


class StorageView(ApiModel):
    storage_gb: int
    volumes: list[VolumeView]
    snapshots: list[SnapshotView]


class PortMappingView(ApiModel):
    internal_port: int
    external_port: int
    protocol: str
    description: str | None
    status: str
    url: str | None


class NetworkView(ApiModel):
    port_mappings: list[PortMappingView]


class TemplateInfo(ApiModel):
    docker_image: str | None


class InstanceSummary(ApiModel):
    instance_id: str
    state: str
    instance_status: str
    system_status: str


class CurrentRestart(ApiModel):
    id: str
    status: RestartStatus
    restart_progress: RestartProgress


class ClusterView(ApiModel):
    id: str
    name: str
    status: str
    provider: str
    region: str
    gpuType: str | None  # noqa: N815 - the seed's field name
    gpu_count: int
    instance_type: str
    instance_count: int
    cpu_cores: int
    memory_gb: int
    containerDiskSize: int  # noqa: N815 - the seed's field name
    volumeSize: int  # noqa: N815 - the seed's field name
    labels: dict[str, str]
    docker_image: str
    template_info: TemplateInfo
    storage: StorageView
    network: NetworkView
    hourly_rate: float | None
    instances: list[InstanceSummary]
    current_restart: CurrentRestart | None
    createdAt: str | None  # noqa: N815 - the seed's field name


class ClusterResponse(ApiModel):
    success: bool = True
    data: ClusterView
    meta: Meta


class ClusterListResponse(ApiModel):
    success: bool = True
    data: list[ClusterView]
    meta: Meta


# ---------------------------------------------------------------- filling them


class RolloutView(ApiModel):
    """The seed's batch result (`maintenance_window`, `total_clusters`, `successful_updates`,
    `results[]`) plus the rollout's own state."""

    rollout_id: str
    status: str
    trigger: str
    created_at: str
    completed_at: str | None = None
    attempt: int
    maintenance_window: str
    total_clusters: int
    successful_updates: int
    failed: int
    skipped: int
    results: list[ItemResult]
    links: dict[str, str]


class RolloutResponse(ApiModel):
    success: bool = True
    data: RolloutView
    meta: Meta


class ResumeRolloutRequest(ApiModel):
    """The optional body of `POST /v1/rollouts/{id}/resume`."""

    model_config = ConfigDict(extra="forbid")

    maintenance_window: MaintenanceWindow | None = Field(
        default=None, description="A later window for this run (the rollout's window shape); recorded on the rollout"
    )


class ScheduleCreatedMeta(Meta):
    clusters_now: list[str] = Field(description="The clusters the rollout would cover if it fired now")


class ScheduleResponse(ApiModel):
    success: bool = True
    data: ScheduleView
    meta: Meta


class ScheduleCreatedResponse(ApiModel):
    success: bool = True
    data: ScheduleView
    meta: ScheduleCreatedMeta


class ScheduleListResponse(ApiModel):
    success: bool = True
    data: list[ScheduleView]
    meta: Meta


def rollout_view(record: RolloutRecord) -> RolloutView:
    summary = summarize(record)
    links = {"self": f"{API_PREFIX}/rollouts/{record.rollout_id}"}
    if record.status == "completed" and summary["successful_updates"] < summary["total_clusters"]:
        links["resume"] = f"{API_PREFIX}/rollouts/{record.rollout_id}/resume"
    return RolloutView.model_validate({**summary, "links": links})


def restart_links(record: RestartRecord) -> RestartLinks:
    return RestartLinks(
        restart=f"{API_PREFIX}/restarts/{record.id}",
        cluster=f"{API_PREFIX}/clusters/{record.cluster_id}",
        cancel=f"{API_PREFIX}/restarts/{record.id}/cancel",
    )


def cost_view(record: RestartRecord) -> CostImpact:
    return CostImpact(
        old_hourly_rate=record.old_hourly_rate,
        new_hourly_rate=record.new_hourly_rate,
        rate_change_reason=record.rate_change_reason,
    )


def error_view(record: RestartRecord) -> dict[str, Any] | None:
    return record.error.model_dump() if record.error else None


def restart_accepted(record: RestartRecord, cluster_status: str) -> RestartAcceptedData:
    return RestartAcceptedData(
        id=record.cluster_id,
        name=record.cluster_name,
        status=cluster_status,
        restart_id=record.id,
        restart_status=record.status,
        restart_initiated_at=record.restart_initiated_at,
        estimated_completion_time=record.estimated_completion_time,
        restart_type=record.restart_type,
        restart_progress=record.progress,
        configuration_updates=record.configuration_updates,
        cost_impact=cost_view(record),
        links=restart_links(record),
        restart_completed_at=record.restart_completed_at,
        downtime_seconds=record.downtime_seconds,
        restart_duration_seconds=record.restart_duration_seconds,
        configuration_changes=record.configuration_updates.applied,
        error=error_view(record),
    )


def restart_view(record: RestartRecord) -> RestartView:
    return RestartView(
        id=record.id,
        cluster_id=record.cluster_id,
        cluster_name=record.cluster_name,
        status=record.status,
        restart_type=record.restart_type,
        trigger=record.trigger,
        requested_by=record.requested_by,
        reason=record.reason,
        restart_initiated_at=record.restart_initiated_at,
        estimated_completion_time=record.estimated_completion_time,
        restart_progress=record.progress,
        configuration_updates=record.configuration_updates,
        phase_history=record.phase_history,
        restart_completed_at=record.restart_completed_at,
        downtime_seconds=record.downtime_seconds,
        restart_duration_seconds=record.restart_duration_seconds,
        configuration_changes=record.configuration_updates.applied,
        cost_impact=cost_view(record),
        error=error_view(record),
        rollback_notes=record.rollback_notes,
        cancel_requested_at=record.cancel_requested_at,
        links=restart_links(record),
    )


def cluster_view(cluster: Cluster, instances: list[InstanceView], current: RestartRecord | None) -> ClusterView:
    host = next((i.public_dns or i.private_ip for i in instances if i.public_dns or i.private_ip), None)
    root = max((v.size_gb for v in cluster.volumes if v.is_root), default=0)
    return ClusterView(
        id=cluster.id,
        name=cluster.name,
        status=cluster.status,
        provider=cluster.provider,
        region=cluster.region,
        gpuType=cluster.gpu_type,
        gpu_count=cluster.gpu_count,
        instance_type=cluster.instance_type,
        instance_count=len(cluster.instance_ids),
        cpu_cores=cluster.vcpus,
        memory_gb=cluster.memory_gb,
        containerDiskSize=root,
        volumeSize=cluster.storage_gb,
        labels=cluster.labels,
        docker_image=cluster.container.image,
        template_info=TemplateInfo(docker_image=cluster.template_image),
        storage=StorageView(
            storage_gb=cluster.storage_gb,
            volumes=[VolumeView(**v.model_dump()) for v in cluster.volumes],
            snapshots=[SnapshotView(id=s.id, name=s.name, created_at=s.created_at) for s in cluster.snapshots],
        ),
        network=NetworkView(
            port_mappings=[
                PortMappingView(
                    internal_port=p.internal_port,
                    external_port=p.external_port,
                    protocol=p.protocol,
                    description=p.description,
                    status=p.status,
                    url=f"{'http' if p.protocol == 'tcp' else 'udp'}://{host}:{p.external_port}" if host else None,
                )
                for p in cluster.container.port_mappings
            ]
        ),
        hourly_rate=cluster.hourly_rate,
        instances=[
            InstanceSummary(
                instance_id=i.instance_id,
                state=i.state,
                instance_status=i.instance_status,
                system_status=i.system_status,
            )
            for i in instances
        ],
        current_restart=(
            CurrentRestart(id=current.id, status=current.status, restart_progress=current.progress) if current else None
        ),
        createdAt=cluster.created_at,
    )
