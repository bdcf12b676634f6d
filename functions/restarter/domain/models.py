"""The product's nouns: restart requests, clusters and restart records.

Field names, defaults and bounds of `RestartRequest` are the seed's request table; unknown
fields are refused so that a typo never silently becomes a default.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from restarter.domain.inventory import VolumeView

ClusterStatus = Literal["running", "stopped", "error", "starting", "stopping", "restarting"]
RESTARTABLE_STATES: tuple[ClusterStatus, ...] = ("running", "stopped", "error")

RestartStatus = Literal["restarting", "ready", "failed", "timed_out", "cancelled", "rolled_back"]
TERMINAL_RESTART_STATUSES: frozenset[str] = frozenset({"ready", "failed", "timed_out", "cancelled", "rolled_back"})
RestartType = Literal["graceful", "force"]
# What the `rebooting` phase does to the nodes when recovery chose it (None: as the restart type says)
NodeAction = Literal["reset_gpu", "reboot", "stop_start"]


Trigger = Literal["api", "schedule", "alarm", "queue", "cli"]

Phase = Literal[
    "validating",
    "acquiring_lock",
    "stopping_processes",
    "creating_checkpoint",
    "updating_configuration",
    "rebooting",
    "starting_services",
    "health_checks",
    "ready",
]

ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# registry/namespace/name:tag or @sha256 digest, as docker accepts them.
IMAGE_PATTERN = (
    r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?"  # registry host or first path component
    r"(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"  # path components
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"  # tag, digest
)
SNAPSHOT_ID_PATTERN = r"^snap[_-][A-Za-z0-9]{1,64}$"
REGION_PATTERN = r"^[a-z]{2}(-gov)?-[a-z]+-\d$"

EnvName = Annotated[str, StringConstraints(pattern=ENV_NAME_PATTERN.pattern)]
EnvValue = Annotated[str, StringConstraints(max_length=4096)]
# The environment is kept as one SSM SecureString (JSON): 8 KB is the largest value SSM stores.
ENVIRONMENT_MAX_BYTES = 8192


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class UpdateConfiguration(StrictModel):
    """Hardware changes applied during the restart. Storage only grows; a region change is refused."""

    cpu_cores: int | None = Field(default=None, ge=1, le=448)
    memory_gb: int | None = Field(default=None, ge=1, le=24576)
    storage_gb: int | None = Field(default=None, ge=1, le=65536)
    gpu_count: int | None = Field(default=None, ge=1, le=16)
    region: Annotated[str, StringConstraints(pattern=REGION_PATTERN)] | None = None

    def changes_hardware(self) -> bool:
        return any(v is not None for v in (self.cpu_cores, self.memory_gb, self.gpu_count))


class PortMappingUpdate(StrictModel):
    internal_port: int = Field(ge=1, le=65535)
    external_port: int = Field(default=0, ge=0, le=65535, description="0 assigns a free port")
    protocol: Literal["tcp", "udp"] = "tcp"
    description: Annotated[str, StringConstraints(max_length=200)] | None = None


class RestartRequest(StrictModel):
    """The seed's restart request body, every field with its default and bound."""

    force: bool = False
    grace_period_minutes: int = Field(default=5, ge=0, le=30)
    wait_for_ready: bool = False
    timeout_minutes: int = Field(default=15, ge=1, le=60)
    preserve_state: bool = False
    update_configuration: UpdateConfiguration | None = None
    environment_updates: dict[EnvName, EnvValue | None] | None = Field(default=None, max_length=200)
    port_mapping_updates: list[PortMappingUpdate] | None = Field(default=None, max_length=50)
    restart_reason: Annotated[str, StringConstraints(max_length=500)] | None = None
    restore_from_snapshot: Annotated[str, StringConstraints(pattern=SNAPSHOT_ID_PATTERN)] | None = None
    update_docker_image: (
        Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=IMAGE_PATTERN)] | None
    ) = None
    apply_system_updates: bool = False

    @field_validator("port_mapping_updates")
    @classmethod
    def _unique_internal_ports(cls, value: list[PortMappingUpdate] | None) -> list[PortMappingUpdate] | None:
        if value:
            keys = [(p.internal_port, p.protocol) for p in value]
            if len(keys) != len(set(keys)):
                raise ValueError("each internal_port/protocol pair may appear once")
        return value

    @field_validator("environment_updates")
    @classmethod
    def _environment_fits_a_parameter(cls, value: dict[str, str | None] | None) -> dict[str, str | None] | None:
        if value:
            size = len(json.dumps({k: v for k, v in value.items() if v is not None}).encode())
            if size > ENVIRONMENT_MAX_BYTES:
                raise ValueError(f"names and values take {size} bytes as JSON; at most {ENVIRONMENT_MAX_BYTES}")
        return value

    @property
    def restart_type(self) -> RestartType:
        return "force" if self.force else "graceful"

    def redacted(self) -> dict[str, Any]:
        """The request as it may appear in records, events and logs: env values hidden."""
        data = self.model_dump(mode="json", exclude_none=True)
        if self.environment_updates:
            data["environment_updates"] = {
                name: ("<redacted>" if value is not None else None) for name, value in self.environment_updates.items()
            }
        return data


# ---------------------------------------------------------------- cluster


class PortMapping(BaseModel):
    internal_port: int
    external_port: int
    protocol: Literal["tcp", "udp"] = "tcp"
    description: str | None = None
    status: Literal["active", "pending", "inactive"] = "active"


class ContainerSpec(BaseModel):
    """What runs on every instance. Environment values live in a SecureString parameter."""

    image: str
    environment_keys: list[str] = Field(default_factory=list)
    environment_parameter: str | None = None
    environment_version: int | None = None
    port_mappings: list[PortMapping] = Field(default_factory=list)


class VolumeInfo(BaseModel):
    volume_id: str
    instance_id: str
    device_name: str
    size_gb: int
    is_root: bool = False

    @classmethod
    def from_view(cls, view: VolumeView) -> VolumeInfo:
        """From what a provider describes (`inventory.VolumeView`)."""
        return cls(
            volume_id=view.volume_id,
            instance_id=view.instance_id,
            device_name=view.device_name,
            size_gb=view.size_gb,
            is_root=view.is_root,
        )


class ClusterSnapshot(BaseModel):
    """A checkpoint of a whole cluster: one EBS snapshot per volume of every instance."""

    id: str
    name: str
    created_at: str
    restart_id: str | None = None
    # instance_id -> device_name -> EBS snapshot id
    volume_snapshots: dict[str, dict[str, str]] = Field(default_factory=dict)


class Cluster(BaseModel):
    id: str
    name: str
    tenant_id: str = "default"
    provider: Literal["aws-ec2"] = "aws-ec2"
    region: str
    instance_ids: list[str]
    instance_type: str
    gpu_type: str | None = None
    gpu_count: int = 0
    vcpus: int = 0
    memory_gb: int = 0
    status: ClusterStatus = "running"
    # why the cluster is in `error` when recovery put it there (e.g. its GPU node needs replacement)
    status_reason: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    container: ContainerSpec
    template_image: str | None = None
    volumes: list[VolumeInfo] = Field(default_factory=list)
    snapshots: list[ClusterSnapshot] = Field(default_factory=list)
    hourly_rate: float | None = None
    current_restart_id: str | None = None
    created_at: str | None = None
    updated_at: str | None = None

    @property
    def storage_gb(self) -> int:
        """The size that `storage_gb` changes: the data volume, or the root volume if none."""
        return max((v.size_gb for v in self.data_volumes()), default=0)

    def data_volumes(self) -> list[VolumeInfo]:
        data = [v for v in self.volumes if not v.is_root]
        return data or [v for v in self.volumes if v.is_root]

    def find_snapshot(self, snapshot_id: str) -> ClusterSnapshot | None:
        for snap in self.snapshots:
            if snap.id == snapshot_id:
                return snap
        return None


# ---------------------------------------------------------------- restart record


class RestartProgress(BaseModel):
    phase: Phase
    percentage: int = Field(ge=0, le=100)
    current_step: str
    steps_completed: int
    total_steps: int


class ConfigurationUpdates(BaseModel):
    pending: list[str] = Field(default_factory=list)
    applied: list[str] = Field(default_factory=list)


class PhaseEntry(BaseModel):
    phase: Phase
    started_at: str
    ended_at: str | None = None
    outcome: Literal["in_progress", "succeeded", "failed", "skipped"] = "in_progress"
    detail: str | None = None


class RestartTarget(BaseModel):
    """The desired end state, computed and validated at intake before anything changes."""

    instance_type: str | None = None
    instance_vcpus: int | None = None
    instance_memory_gb: int | None = None
    instance_gpu_count: int | None = None
    storage_gb: int | None = None
    image: str | None = None
    environment_keys_set: list[str] = Field(default_factory=list)
    environment_keys_unset: list[str] = Field(default_factory=list)
    environment_parameter: str | None = None
    port_mappings: list[PortMapping] | None = None
    restore_snapshot_id: str | None = None
    # instance_id -> EBS snapshot of its root volume, when restoring
    restore_root_snapshots: dict[str, str] = Field(default_factory=dict)
    apply_system_updates: bool = False

    def changes_instance_type(self) -> bool:
        return self.instance_type is not None

    def changes_container(self) -> bool:
        return bool(
            self.image is not None
            or self.environment_keys_set
            or self.environment_keys_unset
            or self.port_mappings is not None
        )

    def changes_configuration(self) -> bool:
        return bool(
            self.changes_instance_type()
            or self.storage_gb is not None
            or self.changes_container()
            or self.restore_snapshot_id
            or self.apply_system_updates
        )


class AppliedChanges(BaseModel):
    """What this restart really changed, so that a failure can put it back."""

    previous_instance_types: dict[str, str] = Field(default_factory=dict)
    previous_container: ContainerSpec | None = None
    container_applied: bool = False
    grown_volumes: dict[str, int] = Field(default_factory=dict)
    replaced_root_volumes: dict[str, str] = Field(default_factory=dict)
    system_updates_applied: bool = False
    checkpoint_id: str | None = None


class RestartError(BaseModel):
    code: str
    message: str
    phase: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class RestartRecord(BaseModel):
    id: str
    cluster_id: str
    cluster_name: str
    tenant_id: str = "default"
    restart_type: RestartType
    trigger: Trigger
    requested_by: str
    # a recovery's rung of the node ladder (restarter.domain.node_recovery)
    node_action: NodeAction | None = None
    reason: str | None = None
    status: RestartStatus = "restarting"
    request: dict[str, Any]
    plan: list[Phase]
    target: RestartTarget
    previous_cluster_status: ClusterStatus = "running"
    restart_initiated_at: str
    estimated_completion_time: str
    deadline: str
    progress: RestartProgress
    configuration_updates: ConfigurationUpdates = Field(default_factory=ConfigurationUpdates)
    # the same lines by the part of the restart that applies them (see rules.describe_changes)
    change_lines: dict[str, list[str]] = Field(default_factory=dict)
    phase_history: list[PhaseEntry] = Field(default_factory=list)
    changes: AppliedChanges = Field(default_factory=AppliedChanges)
    phase_state: dict[str, Any] = Field(default_factory=dict)
    old_hourly_rate: float | None = None
    new_hourly_rate: float | None = None
    rate_change_reason: str | None = None
    cancel_requested_at: str | None = None
    cancel_requested_by: str | None = None
    execution_arn: str | None = None
    downtime_started_at: str | None = None
    downtime_ended_at: str | None = None
    restart_completed_at: str | None = None
    downtime_seconds: int | None = None
    restart_duration_seconds: int | None = None
    error: RestartError | None = None
    rollback_notes: list[str] = Field(default_factory=list)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_RESTART_STATUSES


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def format_time(value: datetime) -> str:
    """UTC, ISO 8601, second precision, with `Z`: the one time format of the product."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
