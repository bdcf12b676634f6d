"""Restarting and cancelling through the local API Gateway: the seed's three curl examples, cancel,
and wait_for_ready's answers at its budget and on a failed restart."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from restarter_local.engine import LocalAws
from tests.conftest import load_event
from tests.integration.harness import RESTART, ApiClient, Seed


def seed_curl_body(event: str) -> dict[str, Any]:
    return dict(load_event(event)["request"])


# ---------------------------------------------------------------- the seed's three curl examples


def test_seed_basic_restart_waits_for_ready_and_answers_the_seed_schema(api: ApiClient, seed: Seed) -> None:
    seed()

    answer = api.call("POST", RESTART, seed_curl_body("start_restart_basic.json"))

    assert answer.status == 200, answer.body
    body = answer.json()
    assert body["success"] is True
    data = body["data"]
    # every field of the seed's response schema
    for field in (
        "id",
        "name",
        "status",
        "restart_initiated_at",
        "estimated_completion_time",
        "restart_type",
        "restart_progress",
        "configuration_updates",
        "cost_impact",
    ):
        assert field in data, field
    assert (data["id"], data["name"], data["restart_type"]) == ("cluster_abc123", "ml-training-cluster", "graceful")
    assert set(data["restart_progress"]) == {"phase", "percentage", "current_step", "steps_completed", "total_steps"}
    assert set(data["configuration_updates"]) == {"pending", "applied"}
    assert set(data["cost_impact"]) == {"old_hourly_rate", "new_hourly_rate", "rate_change_reason"}
    # waited to the end: the cluster runs again and the result is in the answer
    assert data["status"] == "running" and data["restart_status"] == "ready"
    assert data["restart_progress"]["percentage"] == 100
    assert data["downtime_seconds"] > 0 and data["restart_duration_seconds"] >= data["downtime_seconds"]
    assert data["links"]["restart"] == f"/v1/restarts/{data['restart_id']}"
    assert body["meta"]["wait_for_ready"] is True and body["meta"]["completed"] is True
    assert body["meta"]["request_id"]


def test_seed_configuration_update_example_lists_pending_changes_and_cost(
    api: ApiClient, seed: Seed, aws: LocalAws
) -> None:
    seed(instance_type="g6e.4xlarge", instance_count=1)  # 16 vCPUs, 128 GiB, 1x L40S
    body = seed_curl_body("start_restart_config_updates.json")
    body["wait_for_ready"] = False

    answer = api.call("POST", RESTART, body)

    assert answer.status == 200, answer.body
    data = answer.json()["data"]
    assert data["status"] == "restarting"
    assert data["restart_progress"]["phase"] == "stopping_processes"
    assert data["restart_progress"]["steps_completed"] == 2
    assert data["restart_progress"]["total_steps"] == 8
    assert data["restart_progress"]["percentage"] == 25
    pending = data["configuration_updates"]["pending"]
    assert "instance_type: g6e.4xlarge -> g6e.16xlarge" in pending
    assert "memory_gb: 128 -> 512" in pending
    assert "cpu_cores: 16 -> 64" in pending
    assert "docker_image: tensorone/pytorch:2.1-cuda12.1 -> tensorone/pytorch:2.2-cuda12.1" in pending
    assert data["configuration_updates"]["applied"] == []
    cost = data["cost_impact"]
    assert cost["new_hourly_rate"] > cost["old_hourly_rate"] > 0
    assert "upgrade" in cost["rate_change_reason"].lower()
    assert answer.json()["meta"] == {
        "request_id": answer.json()["meta"]["request_id"],
        "wait_for_ready": False,
        "completed": False,
        "waited_seconds": 0.0,
        "warnings": [],
    }
    aws.wait_for_executions()
    final = api.call("GET", f"/v1/restarts/{data['restart_id']}").json()["data"]
    assert final["status"] == "ready"
    assert sorted(final["configuration_changes"]) == sorted(pending)


def test_seed_force_restore_example_restores_snap_xyz789(api: ApiClient, seed: Seed) -> None:
    seed(checkpoints=["snap_xyz789"])

    answer = api.call("POST", RESTART, seed_curl_body("start_restart_force_snapshot.json"))

    assert answer.status == 200, answer.body
    data = answer.json()["data"]
    assert data["restart_type"] == "force" and data["restart_status"] == "ready"
    applied = data["configuration_changes"]
    assert "root_volume: current -> snap_xyz789" in applied
    assert any(line.startswith("port_mapping.tcp/8080: (none) -> ") for line in applied)
    cluster = api.call("GET", "/v1/clusters/cluster_abc123").json()["data"]
    web = next(p for p in cluster["network"]["port_mappings"] if p["internal_port"] == 8080)
    assert web["status"] == "active" and 30000 <= web["external_port"] < 32768
    assert web["url"].endswith(f":{web['external_port']}")


# ---------------------------------------------------------------- cancel and wait_for_ready


def test_cancel_stops_the_restart_cleans_up_and_releases_the_lock(api: ApiClient, seed: Seed, aws: LocalAws) -> None:
    cluster = seed()
    aws.agent.set_never_healthy(cluster.instance_ids[0])  # the restart waits in starting_services
    restart_id = api.call("POST", RESTART, {"timeout_minutes": 60}).json()["data"]["restart_id"]

    answer = api.call("POST", f"/v1/restarts/{restart_id}/cancel")
    assert answer.status == 202
    assert answer.json()["data"]["cancel_requested_at"]
    aws.agent.clear_never_healthy(cluster.instance_ids[0])
    aws.wait_for_executions()

    restart = api.call("GET", f"/v1/restarts/{restart_id}").json()["data"]
    assert restart["status"] == "cancelled"
    assert restart["error"]["code"] == "CANCELLED"
    assert aws.deps is not None and aws.deps.locks.holder(cluster.id) is None
    assert api.call("GET", "/v1/clusters/cluster_abc123").json()["data"]["status"] == "running"
    again = api.call("POST", f"/v1/restarts/{restart_id}/cancel")
    assert again.status == 409 and again.json()["error"]["code"] == "INVALID_STATE"


def test_cancel_that_races_a_step_write_still_lands(
    api: ApiClient, seed: Seed, aws: LocalAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given the execution writes the record between the cancel's read and its write."""
    cluster = seed()
    aws.agent.set_never_healthy(cluster.instance_ids[0])
    restart_id = api.call("POST", RESTART, {"timeout_minutes": 60}).json()["data"]["restart_id"]
    assert aws.deps is not None
    store = aws.deps.restarts
    read = store.get
    raced: list[int] = []
    api_thread = threading.current_thread()

    def read_then_lose_the_race(record_id: str) -> Any:
        stale = read(record_id)
        if stale is not None and not raced and threading.current_thread() is api_thread:
            fresh = read(record_id)
            assert fresh is not None
            raced.append(store.put(fresh[0], fresh[1]))  # a step's write lands first
        return stale

    monkeypatch.setattr(store, "get", read_then_lose_the_race)

    # When the user cancels
    answer = api.call("POST", f"/v1/restarts/{restart_id}/cancel")

    # Then the cancel is accepted, not a 409, and the execution ends cancelled
    assert raced, "the race was not staged"
    assert answer.status == 202, answer.body
    monkeypatch.undo()
    aws.agent.clear_never_healthy(cluster.instance_ids[0])
    aws.wait_for_executions()
    assert api.call("GET", f"/v1/restarts/{restart_id}").json()["data"]["status"] == "cancelled"


def test_wait_for_ready_gives_up_at_the_wait_budget_and_says_so(api: ApiClient, seed: Seed, aws: LocalAws) -> None:
    cluster = seed()
    assert aws.deps is not None
    aws.deps.settings = aws.deps.settings.model_copy(update={"api_wait_budget_seconds": 0.3})
    aws.agent.set_never_healthy(cluster.instance_ids[0])

    answer = api.call("POST", RESTART, {"wait_for_ready": True, "timeout_minutes": 60})

    assert answer.status == 200
    body = answer.json()
    assert body["meta"]["wait_for_ready"] is True
    assert body["meta"]["completed"] is False
    assert body["meta"]["waited_seconds"] >= 0.3
    assert body["data"]["restart_status"] == "restarting"
    aws.agent.clear_never_healthy(cluster.instance_ids[0])


def test_wait_for_ready_on_a_failed_restart_answers_the_failure(api: ApiClient, seed: Seed, aws: LocalAws) -> None:
    cluster = seed()
    aws.agent.close_port(cluster.instance_ids[0], 8888)

    answer = api.call("POST", RESTART, {"wait_for_ready": True, "update_docker_image": "tensorone/pytorch:2.3"})

    assert answer.status == 502
    error = answer.json()["error"]
    assert error["code"] == "RESTART_FAILED"
    assert error["details"]["status"] == "rolled_back"
    assert error["details"]["phase"] == "health_checks"
    assert answer.json()["meta"]["completed"] is True
