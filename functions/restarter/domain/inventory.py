"""What the phases see of a cloud's machines: plain values, filled in by a provider adapter."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

InstanceState = Literal["pending", "running", "stopping", "stopped", "shutting-down", "terminated"]
CommandStatus = Literal["Pending", "InProgress", "Delayed", "Success", "Cancelled", "TimedOut", "Failed", "Cancelling"]
PENDING_COMMAND_STATUSES = frozenset({"Pending", "InProgress", "Delayed"})


@dataclass(frozen=True)
class InstanceView:
    instance_id: str
    state: str
    instance_type: str
    instance_status: str = "not-applicable"  # ok | impaired | initializing | insufficient-data
    system_status: str = "not-applicable"
    public_dns: str | None = None
    private_ip: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def status_checks_ok(self) -> bool:
        return self.state == "running" and self.instance_status == "ok" and self.system_status == "ok"


@dataclass(frozen=True)
class InstanceTypeInfo:
    name: str
    vcpus: int
    memory_gb: int
    gpu_count: int
    gpu_name: str | None = None
    gpu_manufacturer: str | None = None

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]


@dataclass(frozen=True)
class VolumeView:
    volume_id: str
    instance_id: str
    device_name: str
    size_gb: int
    is_root: bool


@dataclass(frozen=True)
class SnapshotView:
    """An EBS snapshot as the cloud has it now; `tags` tell which cluster's checkpoint it is."""

    snapshot_id: str
    state: str  # pending | completed | error | recoverable | recovering
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CommandInvocation:
    instance_id: str
    status: str
    response_code: int = -1
    stdout: str = ""
    stderr: str = ""

    @property
    def pending(self) -> bool:
        return self.status in PENDING_COMMAND_STATUSES
