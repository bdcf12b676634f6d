"""`restore_from_snapshot`: the checkpoint must still exist in the cloud, be usable, and be
this cluster's, or the request is refused at intake naming the field."""

from __future__ import annotations

import pytest

from restarter.domain.errors import RequestValidationError
from restarter.domain.inventory import SnapshotView
from restarter.domain.models import Cluster, ClusterSnapshot, ContainerSpec, RestartTarget
from restarter.domain.rules import ensure_snapshot_restorable

ROOTS = {"i-aaa": "snap-0aaa", "i-bbb": "snap-0bbb"}


def cluster() -> Cluster:
    return Cluster(
        id="cluster_abc123",
        name="ml-training-cluster",
        region="us-east-1",
        instance_ids=list(ROOTS),
        instance_type="p4d.24xlarge",
        container=ContainerSpec(image="tensorone/pytorch:2.1-cuda12.1"),
        snapshots=[
            ClusterSnapshot(
                id="snap_xyz789",
                name="checkpoint",
                created_at="2026-01-01T00:00:00Z",
                volume_snapshots={i: {"/dev/sda1": s} for i, s in ROOTS.items()},
            )
        ],
    )


def target() -> RestartTarget:
    return RestartTarget(restore_snapshot_id="snap_xyz789", restore_root_snapshots=dict(ROOTS))


def found(state: str = "completed", owner: str | None = "cluster_abc123") -> list[SnapshotView]:
    tags = {"restarter:cluster": owner} if owner else {}
    return [SnapshotView(snapshot_id=s, state=state, tags=tags) for s in ROOTS.values()]


def refusal(snapshots: list[SnapshotView]) -> RequestValidationError:
    with pytest.raises(RequestValidationError) as refused:
        ensure_snapshot_restorable(cluster(), target(), snapshots)
    assert refused.value.code == "VALIDATION_ERROR"
    assert refused.value.details["field"] == "restore_from_snapshot"
    assert refused.value.details["snapshot_id"] == "snap_xyz789"
    return refused.value


def test_a_checkpoint_whose_snapshots_exist_and_are_this_clusters_is_restorable() -> None:
    ensure_snapshot_restorable(cluster(), target(), found())
    ensure_snapshot_restorable(cluster(), target(), found(state="pending"))
    ensure_snapshot_restorable(cluster(), target(), found(owner=None))  # untagged: not judged by the tag


def test_a_request_without_a_restore_is_not_checked() -> None:
    ensure_snapshot_restorable(cluster(), RestartTarget(), [])


def test_a_deleted_snapshot_is_refused() -> None:
    error = refusal(found()[:1])
    assert error.message == "Snapshot no longer exists"
    assert error.details["missing_volume_snapshots"] == ["snap-0bbb"]


def test_a_snapshot_in_error_is_refused() -> None:
    error = refusal(found(state="error"))
    assert error.details["unusable_volume_snapshots"] == ["snap-0aaa", "snap-0bbb"]


def test_another_clusters_snapshot_is_refused() -> None:
    error = refusal(found(owner="cluster_prod01"))
    assert error.message == "Snapshot belongs to another cluster"
    assert error.details["owners"] == {"snap-0aaa": "cluster_prod01", "snap-0bbb": "cluster_prod01"}
