"""Reading through the API: a cluster as the seed clients read it, the filtered fleet, and the
restart history newest first, page by page."""

from __future__ import annotations

from restarter_local.engine import LocalAws
from tests.integration.harness import RESTART, ApiClient, Seed

# ---------------------------------------------------------------- reads


def test_get_cluster_answers_what_the_seed_clients_read(api: ApiClient, seed: Seed) -> None:
    seed(checkpoints=["snap_older1", "snap_newer2"])

    answer = api.call("GET", "/v1/clusters/cluster_abc123", key="reader")

    assert answer.status == 200
    cluster = answer.json()["data"]
    assert cluster["status"] == "running" and cluster["name"] == "ml-training-cluster"
    assert cluster["gpuType"] == "A100" and cluster["gpu_count"] == 8
    assert cluster["template_info"]["docker_image"] == "tensorone/pytorch:2.1-cuda12.1"
    assert [s["id"] for s in cluster["storage"]["snapshots"]] == ["snap_older1", "snap_newer2"]
    assert all({"id", "name", "created_at"} <= set(s) for s in cluster["storage"]["snapshots"])
    [jupyter] = cluster["network"]["port_mappings"]
    assert (jupyter["internal_port"], jupyter["status"]) == (8888, "active")
    assert jupyter["url"].startswith("http://") and jupyter["url"].endswith(":30888")
    assert cluster["current_restart"] is None


def test_list_clusters_filters_by_status_and_label(api: ApiClient, seed: Seed) -> None:
    seed()
    seed(id="cluster_prod01", name="inference-prod", labels={"env": "production"}, instance_count=1)
    seed(id="cluster_err01", name="broken", status="error", instance_count=1)

    everything = api.call("GET", "/v1/clusters").json()["data"]
    errored = api.call("GET", "/v1/clusters", query={"status": ["error"]}).json()["data"]
    production = api.call("GET", "/v1/clusters", query={"label": ["env=production"]}).json()["data"]

    assert [c["id"] for c in everything] == ["cluster_abc123", "cluster_err01", "cluster_prod01"]
    assert [c["id"] for c in errored] == ["cluster_err01"]
    assert [c["id"] for c in production] == ["cluster_prod01"]


def test_restart_history_is_newest_first_and_paginated(api: ApiClient, seed: Seed, aws: LocalAws) -> None:
    seed()
    ids = [api.call("POST", RESTART, {"wait_for_ready": True}).json()["data"]["restart_id"] for _ in range(3)]

    first = api.call("GET", "/v1/clusters/cluster_abc123/restarts", query={"limit": ["2"]}).json()["data"]
    second = api.call(
        "GET", "/v1/clusters/cluster_abc123/restarts", query={"limit": ["2"], "next_token": [first["next_token"]]}
    ).json()["data"]

    assert [r["id"] for r in first["restarts"] + second["restarts"]] == list(reversed(ids))
    assert second["next_token"] is None
    restart = api.call("GET", f"/v1/restarts/{ids[0]}").json()["data"]
    assert [p["phase"] for p in restart["phase_history"]] == [
        "stopping_processes",
        "rebooting",
        "starting_services",
        "health_checks",
        "ready",
    ]
    assert restart["restart_completed_at"] and restart["downtime_seconds"] > 0
