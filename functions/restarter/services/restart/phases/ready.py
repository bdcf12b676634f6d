"""ready: the health checks passed; record the end and the cluster's new shape."""

from __future__ import annotations

from restarter.services.restart.context import PhaseContext, close_record
from restarter.services.restart.state import PhaseState


class ReadyState(PhaseState):
    pass


def ready(ctx: PhaseContext[ReadyState]) -> bool:
    record, cluster = ctx.record, ctx.cluster
    record.status = "ready"
    close_record(record, ctx.now())
    target = record.target
    if target.instance_type:
        cluster.instance_type = target.instance_type
        cluster.vcpus = target.instance_vcpus or cluster.vcpus
        cluster.memory_gb = target.instance_memory_gb or cluster.memory_gb
        cluster.gpu_count = target.instance_gpu_count or cluster.gpu_count
        cluster.hourly_rate = record.new_hourly_rate
    cluster.volumes = ctx.volumes()
    cluster.status = "running"
    cluster.status_reason = None
    cluster.current_restart_id = None
    return True
