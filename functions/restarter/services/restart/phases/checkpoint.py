"""creating_checkpoint (only with `preserve_state`): snapshot every volume of every instance."""

from __future__ import annotations

import secrets

from pydantic import Field

from restarter.domain.errors import PhaseFailedError
from restarter.domain.models import ClusterSnapshot, format_time
from restarter.services.restart.context import PhaseContext
from restarter.services.restart.state import PhaseState


class CheckpointState(PhaseState):
    checkpoint_id: str | None = None
    # instance_id -> device_name -> EBS snapshot id, filled instance by instance
    volume_snapshots: dict[str, dict[str, str]] = Field(default_factory=dict)


def new_checkpoint_id() -> str:
    return f"snap_{secrets.token_hex(6)}"


def creating_checkpoint(ctx: PhaseContext[CheckpointState]) -> bool:
    # One instance at a time, each recorded as soon as its snapshots exist: a retry after a
    # throttled call snapshots only the instances not done yet, under the same checkpoint.
    state, record, cluster = ctx.state, ctx.record, ctx.cluster
    if state.checkpoint_id is None:
        state.checkpoint_id = new_checkpoint_id()
    snapshots = state.volume_snapshots
    missing = [iid for iid in cluster.instance_ids if iid not in snapshots]
    if missing:
        tags = {
            "restarter:cluster": cluster.id,
            "restarter:restart": record.id,
            "restarter:checkpoint": state.checkpoint_id,
        }
        for instance_id in missing:
            snapshots[instance_id] = ctx.provider.create_checkpoint([instance_id], tags).get(instance_id, {})
        return False
    snapshot_ids = [s for devices in snapshots.values() for s in devices.values()]
    states = ctx.provider.snapshot_states(snapshot_ids)
    failed = sorted(s for s, st in states.items() if st == "error")
    if failed:
        raise PhaseFailedError("Checkpoint snapshot failed", {"snapshots": failed})
    if any(states.get(s) != "completed" for s in snapshot_ids):
        return False
    checkpoint = ClusterSnapshot(
        id=state.checkpoint_id,
        name=f"checkpoint before {record.id}",
        created_at=format_time(ctx.now()),
        restart_id=record.id,
        volume_snapshots=snapshots,
    )
    cluster.snapshots.append(checkpoint)
    record.changes.checkpoint_id = checkpoint.id
    return True
