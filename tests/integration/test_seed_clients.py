"""The seed's Python client functions run unchanged against the API: `requests` calls to
`https://api.tensorone.ai` are routed to the local API Gateway, nothing else changes."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import requests

from restarter.domain.models import Cluster
from restarter_local.engine import LocalAws
from restarter_local.gateway import RequestsAdapter
from tests import seed_clients
from tests.integration.harness import ApiClient

Seed = Callable[..., Cluster]


@pytest.fixture
def seed_api(api: ApiClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    session = requests.Session()
    session.mount("https://api.tensorone.ai/", RequestsAdapter(api.gateway))
    monkeypatch.setattr(seed_clients.requests, "get", session.get)
    monkeypatch.setattr(seed_clients.requests, "post", session.post)
    monkeypatch.setattr(seed_clients, "API_KEY", api.keys["admin"])
    yield
    session.close()


def test_maintenance_window_batch_updates_every_cluster(seed_api: None, seed: Seed, aws: LocalAws) -> None:
    seed(id="cluster_abc123", name="ml-training-cluster", instance_count=1)
    seed(id="cluster_prod01", name="inference-prod", instance_count=1)

    report = seed_clients.apply_system_updates(
        ["cluster_abc123", "cluster_prod01", "cluster_missing"], {"id": "mw-2024-01-15", "docker_updates": {}}
    )

    assert report["maintenance_window"] == "mw-2024-01-15"
    assert report["total_clusters"] == 3
    assert report["successful_updates"] == 2
    by_id = {r["cluster_id"]: r for r in report["results"]}
    assert by_id["cluster_abc123"]["success"] is True
    assert by_id["cluster_abc123"]["downtime_seconds"] > 0
    assert by_id["cluster_prod01"]["name"] == "inference-prod"
    assert by_id["cluster_missing"] == {
        "cluster_id": "cluster_missing",
        "success": False,
        "error": "Failed to get cluster info",
    }
    assert aws.deps is not None
    restarts, _ = aws.deps.restarts.list_for_cluster("cluster_prod01")
    assert restarts[0].reason == "Maintenance window: mw-2024-01-15"


def test_error_recovery_with_a_forced_restart(seed_api: None, seed: Seed) -> None:
    seed(status="error")

    result = seed_clients.recover_cluster_from_error("cluster_abc123", "restart")

    assert result["success"] is True
    assert result["recovery_actions"] == ["Forced restart"]
    assert result["new_status"] == "running"
    assert result["restart_duration"] > 0
    assert result["recovery_completed_at"].endswith("Z")


def test_error_recovery_restores_the_latest_snapshot(seed_api: None, seed: Seed, aws: LocalAws) -> None:
    seed(status="error", checkpoints=["snap_monday", "snap_tuesday"])

    result = seed_clients.recover_cluster_from_error("cluster_abc123", "restore_snapshot")

    assert result["success"] is True
    assert result["recovery_actions"] == ["Restored from snapshot: checkpoint snap_tuesday"]
    assert aws.deps is not None
    restarts, _ = aws.deps.restarts.list_for_cluster("cluster_abc123")
    assert restarts[0].configuration_updates.applied == ["root_volume: current -> snap_tuesday"]


def test_error_recovery_rebuilds_from_the_template_image(seed_api: None, seed: Seed, aws: LocalAws) -> None:
    cluster = seed(status="error")

    result = seed_clients.recover_cluster_from_error("cluster_abc123", "rebuild")

    assert result["success"] is True
    assert result["new_status"] == "running"
    assert aws.deps is not None
    restarts, _ = aws.deps.restarts.list_for_cluster(cluster.id)
    assert "environment.RECOVERY_MODE: (unset) -> <redacted>" in restarts[0].configuration_updates.applied
    assert aws.agent.containers[cluster.instance_ids[0]]["image"] == cluster.template_image


def test_error_recovery_refuses_a_cluster_that_is_not_in_error(seed_api: None, seed: Seed) -> None:
    seed()
    result = seed_clients.recover_cluster_from_error("cluster_abc123", "restart")
    assert result == {"success": False, "error": "Cluster is not in error state (current: running)"}
