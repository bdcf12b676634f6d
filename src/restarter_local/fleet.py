"""A simulated GPU fleet on the embedded AWS: EC2 instances tagged by cluster, their EBS
volumes, the container spec with its environment in a SecureString parameter, and the
cluster record. Clusters are described by `ClusterSpec` (fleet files use the same fields).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints, model_validator

from restarter.adapters.provider import Provider
from restarter.domain.cost import cluster_hourly_rate, load_price_catalog
from restarter.domain.models import (
    Cluster,
    ClusterSnapshot,
    ClusterStatus,
    ContainerSpec,
    PortMapping,
    VolumeInfo,
    format_time,
)
from restarter.services.restart_intake import cluster_environment_parameter
from restarter_local.engine import LocalAws


class ClusterSpec(BaseModel):
    id: str
    name: str
    instance_type: str = "p4d.24xlarge"
    instance_count: int = Field(default=1, ge=1, le=64)
    status: ClusterStatus = "running"
    labels: dict[str, str] = Field(default_factory=dict)
    image: str = "tensorone/pytorch:2.1-cuda12.1"
    environment: dict[str, str] = Field(default_factory=dict)
    ports: list[PortMapping] = Field(default_factory=list)
    root_volume_gb: int = 200
    data_volume_gb: int | None = 1000
    tenant_id: str = "default"
    hourly_rate: float | None = None
    # ids of checkpoints that already exist (e.g. the seed's `snap_xyz789`), oldest first
    checkpoints: list[str] = Field(default_factory=list)
    # fixed EC2 instance ids, so that sample events (alarms, EC2 state changes) can name them
    instance_ids: list[Annotated[str, StringConstraints(pattern=r"^i-[0-9a-f]{8,17}$")]] | None = None

    @model_validator(mode="after")
    def _one_id_per_instance(self) -> ClusterSpec:
        if self.instance_ids is not None and len(self.instance_ids) != self.instance_count:
            raise ValueError("instance_ids must name every instance (as many as instance_count)")
        return self


@contextmanager
def _fixed_instance_ids(ids: list[str] | None) -> Iterator[None]:
    """Make moto give the next instances these ids instead of random ones."""
    if not ids:
        yield
        return
    from moto.ec2.models import instances

    taken = iter(ids)
    original = instances.random_instance_id  # type: ignore[attr-defined]
    instances.random_instance_id = lambda: next(taken)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        instances.random_instance_id = original  # type: ignore[attr-defined]


def seed_cluster(engine: LocalAws, spec: ClusterSpec) -> Cluster:
    assert engine.deps is not None
    ec2 = engine.client("ec2")
    image_id = engine.default_image_id()
    block_devices: list[dict[str, Any]] = [
        {"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": spec.root_volume_gb, "VolumeType": "gp3"}}
    ]
    if spec.data_volume_gb:
        block_devices.append(
            {"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": spec.data_volume_gb, "VolumeType": "gp3"}}
        )
    tags = [
        {"Key": "restarter:cluster", "Value": spec.id},
        {"Key": "Name", "Value": spec.name},
        *({"Key": k, "Value": v} for k, v in spec.labels.items()),
    ]
    with _fixed_instance_ids(spec.instance_ids):
        reservation = ec2.run_instances(
            ImageId=image_id,
            InstanceType=spec.instance_type,
            MinCount=spec.instance_count,
            MaxCount=spec.instance_count,
            BlockDeviceMappings=block_devices,
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": tags},
                {"ResourceType": "volume", "Tags": tags[:1]},
            ],
        )
    instance_ids = [i["InstanceId"] for i in reservation["Instances"]]
    if spec.status == "stopped":
        ec2.stop_instances(InstanceIds=instance_ids)

    provider: Provider = engine.deps.provider
    type_info = provider.describe_instance_type(spec.instance_type)
    container = ContainerSpec(image=spec.image, port_mappings=spec.ports)
    if spec.environment:
        parameter = cluster_environment_parameter(spec.id)
        container.environment_parameter = parameter
        container.environment_version = provider.put_environment(parameter, spec.environment)
        container.environment_keys = sorted(spec.environment)
    if spec.status in ("running", "error"):
        for instance_id in instance_ids:
            engine.agent.containers[instance_id] = {
                "image": spec.image,
                "ports": [p.model_dump() for p in spec.ports],
                "running": spec.status == "running",
            }
    volumes = [VolumeInfo.from_view(v) for v in provider.describe_volumes(instance_ids)]
    now = format_time(engine.clock.now())
    region = engine.settings.region if engine.settings else "us-east-1"
    snapshots = [
        ClusterSnapshot(
            id=checkpoint_id,
            name=f"checkpoint {checkpoint_id}",
            created_at=format_time(engine.clock.now() - timedelta(days=len(spec.checkpoints) - index)),
            volume_snapshots=provider.create_checkpoint(
                instance_ids, {"restarter:cluster": spec.id, "restarter:checkpoint": checkpoint_id}
            ),
        )
        for index, checkpoint_id in enumerate(spec.checkpoints)
    ]
    cluster = Cluster(
        id=spec.id,
        name=spec.name,
        tenant_id=spec.tenant_id,
        region=region,
        instance_ids=instance_ids,
        instance_type=spec.instance_type,
        gpu_type=type_info.gpu_name,
        gpu_count=type_info.gpu_count,
        vcpus=type_info.vcpus,
        memory_gb=type_info.memory_gb,
        status=spec.status,
        labels=spec.labels,
        container=container,
        template_image=spec.image,
        volumes=volumes,
        snapshots=snapshots,
        hourly_rate=spec.hourly_rate
        if spec.hourly_rate is not None
        else cluster_hourly_rate(load_price_catalog(), spec.instance_type, spec.instance_count, region),
        created_at=now,
        updated_at=now,
    )
    engine.deps.clusters.put(cluster)
    return cluster
