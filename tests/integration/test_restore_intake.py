"""A restore from a checkpoint whose EBS snapshots are gone, or are another cluster's, is
refused at intake with the seed's error envelope naming `restore_from_snapshot`: no lock, no
restart record, no execution stay behind, and the cluster is untouched."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from restarter.domain.errors import RequestValidationError
from restarter.domain.models import Cluster
from restarter.services.restart_intake import accept_restart
from restarter_local.engine import LocalAws

Seed = Callable[..., Cluster]


def assert_nothing_left(aws: LocalAws, cluster: Cluster) -> None:
    assert aws.deps is not None
    assert aws.deps.locks.holder(cluster.id) is None
    assert aws.deps.restarts.list_for_cluster(cluster.id, limit=5)[0] == []
    assert aws.executions() == []
    after = aws.deps.clusters.get(cluster.id)
    assert after is not None and (after.status, after.current_restart_id) == (cluster.status, None)


def test_a_checkpoint_whose_snapshots_were_deleted_is_refused_by_the_api(aws: LocalAws, seed: Seed, api: Any) -> None:
    # Given a cluster whose checkpoint's EBS snapshots were deleted since it was taken
    cluster = seed(checkpoints=["snap_xyz789"])
    [checkpoint] = cluster.snapshots
    ec2 = aws.client("ec2")
    for devices in checkpoint.volume_snapshots.values():
        for snapshot_id in devices.values():
            ec2.delete_snapshot(SnapshotId=snapshot_id)

    # When the seed's third example asks to restore it
    answer = api.call(
        "POST",
        f"/v1/clusters/{cluster.id}/restart",
        {"force": True, "restore_from_snapshot": "snap_xyz789", "restart_reason": "Restore from backup"},
    )

    # Then it is refused at intake, naming the field, and nothing stays behind
    body = answer.json()
    assert answer.status == 400, body
    assert body["success"] is False
    assert body["error"]["code"] == "VALIDATION_ERROR"
    assert body["error"]["details"]["field"] == "restore_from_snapshot"
    assert body["error"]["details"]["snapshot_id"] == "snap_xyz789"
    assert_nothing_left(aws, cluster)


def test_a_checkpoint_whose_snapshots_are_another_clusters_is_refused(aws: LocalAws, seed: Seed) -> None:
    assert aws.deps is not None
    cluster = seed(checkpoints=["snap_xyz789"])
    [checkpoint] = cluster.snapshots
    ids = [s for devices in checkpoint.volume_snapshots.values() for s in devices.values()]
    aws.client("ec2").create_tags(Resources=ids, Tags=[{"Key": "restarter:cluster", "Value": "cluster_prod01"}])

    with pytest.raises(RequestValidationError) as refused:
        accept_restart(
            aws.deps,
            cluster.id,
            {"force": True, "restore_from_snapshot": "snap_xyz789"},
            trigger="cli",
            requested_by="t",
        )

    assert refused.value.details["field"] == "restore_from_snapshot"
    assert set(refused.value.details["owners"].values()) == {"cluster_prod01"}
    assert_nothing_left(aws, cluster)
