"""Alarm recovery follows the GPUs' worst finding up the node ladder, on the real ASL:
reset the GPU → reboot → stop/start on a new host → replace (announced, not performed).

The findings come from a health check through the API; the alarm is the EventBridge state
change of a `ClusterId` alarm (events/alarm_state_change_cluster_dimension.json); a rung that
fails continues from the ended execution, as the template's rule delivers it.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from restarter.adapters.recovery_store import RecoveryStore
from restarter.domain.models import RestartRecord
from restarter_local.engine import LocalAws
from restarter_local.moto_ext.gpu_sim import GpuFault
from tests.integration.harness import ApiClient, EventCapture, Seed, ec2_calls, event, restarts_of, send, sent_commands


def cluster_alarm(cluster_id: str) -> dict[str, Any]:
    """A new transition into ALARM of an alarm whose metric names the cluster."""
    sample = event("alarm_state_change_cluster_dimension.json", event_id=str(uuid.uuid4()))
    return dict(json.loads(json.dumps(sample).replace("cluster_abc123", cluster_id)))


def health_check(api: ApiClient, cluster_id: str) -> dict[str, Any]:
    started = api.call("POST", f"/v1/clusters/{cluster_id}/health-check")
    assert started.status == 202, started.body
    for _ in range(200):
        data = api.call("GET", f"/v1/clusters/{cluster_id}/health", key="reader").json()["data"]
        if data["pending_check"] is None:
            return dict(data)
        time.sleep(0.05)
    raise AssertionError("the health check did not finish")


def settled(aws: LocalAws, cluster_id: str, timeout: float = 60) -> list[RestartRecord]:
    """Every restart of the cluster, once none runs and no ended execution is still being handled."""
    assert aws.deps is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        aws.wait_for_executions(timeout=timeout)
        cluster = aws.deps.clusters.get(cluster_id)
        idle = cluster is not None and cluster.current_restart_id is None and not aws.execution_events_pending
        if idle and all(e["status"] != "RUNNING" for e in aws.executions()):
            return sorted(restarts_of(aws, cluster_id), key=lambda r: r.restart_initiated_at)
        time.sleep(0.05)
    raise AssertionError("the recovery did not settle")


def findings(health: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f["code"], f["action"]) for n in health["instances"] for f in (n["assessment"] or {})["findings"]]


def test_given_a_pending_row_remap_when_checked_then_unhealthy_and_the_ladders_reboot_clears_it(
    aws: LocalAws, seed: Seed, api: ApiClient, recovery: RecoveryStore
) -> None:
    cluster = seed(instance_count=1)
    aws.agent.inject_gpu_fault(cluster.instance_ids[0], GpuFault(kind="row_remap_pending", gpu=1))
    before = health_check(api, cluster.id)
    assert before["verdict"] == "unhealthy" and findings(before) == [("row_remap_pending", "reboot")]

    started = send(cluster_alarm(cluster.id))

    assert (started["action"], started["rung"]) == ("recovery_started", "reboot")
    (record,) = settled(aws, cluster.id)
    assert (record.node_action, record.status) == ("reboot", "ready")
    assert ec2_calls(aws, "RebootInstances") == 1 and ec2_calls(aws, "StopInstances") == 0
    after = api.call("GET", f"/v1/clusters/{cluster.id}/health", key="reader").json()["data"]
    assert after["verdict"] == "healthy" and findings(after) == []
    assert [e.rung for e in recovery.history(cluster.id, aws.clock.now().replace(year=2000))] == ["reboot"]


def test_given_xid_79_when_the_alarm_fires_then_the_ladder_climbs_from_reboot_to_a_new_host(
    aws: LocalAws, seed: Seed, api: ApiClient, recovery: RecoveryStore
) -> None:
    cluster = seed(instance_count=1)
    aws.agent.inject_gpu_fault(cluster.instance_ids[0], GpuFault(kind="xid", gpu=3, xid=79))
    assert set(findings(health_check(api, cluster.id))) == {("xid_79", "reboot"), ("gpu_missing", "reboot")}

    assert send(cluster_alarm(cluster.id))["rung"] == "reboot"

    first, second = settled(aws, cluster.id)
    # the reboot did not bring the GPU back: missing twice in a row asks for a new host
    assert (first.node_action, first.status) == ("reboot", "failed")
    assert first.error is not None
    assert [(f["code"], f["action"]) for f in first.error.details["findings"]] == [("gpu_missing", "stop_start")]
    assert (second.node_action, second.status) == ("stop_start", "ready")
    assert ec2_calls(aws, "StopInstances") == 1
    entries = recovery.history(cluster.id, aws.clock.now().replace(year=2000))
    assert [e.rung for e in sorted(entries, key=lambda e: e.recovered_at)] == ["reboot", "stop_start"]


def test_given_a_gpu_reset_class_xid_when_the_alarm_fires_then_the_gpus_are_reset_without_a_reboot(
    aws: LocalAws, seed: Seed, api: ApiClient, recovery: RecoveryStore
) -> None:
    cluster = seed(instance_count=1)
    aws.agent.inject_gpu_fault(cluster.instance_ids[0], GpuFault(kind="xid", gpu=0, xid=119))
    assert findings(health_check(api, cluster.id)) == [("xid_119", "reset_gpu")]

    assert send(cluster_alarm(cluster.id))["rung"] == "reset_gpu"

    (record,) = settled(aws, cluster.id)
    assert (record.node_action, record.status) == ("reset_gpu", "ready"), record.error
    ops = [c["Parameters"]["commands"][0] for c in sent_commands(aws, cluster)]
    assert "# restarter-op: stop_services" in ops and "# restarter-op: reset_gpu" in ops  # workload first
    assert ec2_calls(aws, "RebootInstances") == 0 and ec2_calls(aws, "StopInstances") == 0


def test_given_local_state_on_instance_store_when_a_new_host_is_next_then_it_is_refused_and_replacement_announced(
    aws: LocalAws, seed: Seed, api: ApiClient, recovery: RecoveryStore, published: EventCapture
) -> None:
    cluster = seed(instance_count=1, labels={"restarter:local-state": "true"})
    aws.agent.inject_gpu_fault(cluster.instance_ids[0], GpuFault(kind="xid", gpu=3, xid=79))
    health_check(api, cluster.id)

    send(cluster_alarm(cluster.id))

    (reboot,) = settled(aws, cluster.id)
    assert (reboot.node_action, reboot.status) == ("reboot", "failed")
    assert ec2_calls(aws, "StopInstances") == 0
    assert aws.deps is not None
    stored = aws.deps.clusters.get(cluster.id)
    assert stored is not None and stored.status == "error"
    assert stored.status_reason is not None and "instance-store" in stored.status_reason
    (announced,) = [e for e in published.drain() if e["detail-type"] == "Node Needs Replacement"]
    assert announced["detail"]["cluster_id"] == cluster.id and "restarter:local-state" in announced["detail"]["reason"]


def test_given_a_row_remap_failure_when_the_alarm_fires_then_the_node_needs_replacement_and_nothing_restarts(
    aws: LocalAws, seed: Seed, api: ApiClient, recovery: RecoveryStore, published: EventCapture
) -> None:
    cluster = seed(instance_count=1)
    aws.agent.inject_gpu_fault(cluster.instance_ids[0], GpuFault(kind="row_remap_failure", gpu=4))
    assert findings(health_check(api, cluster.id)) == [("row_remap_failure", "replace")]

    answer = send(cluster_alarm(cluster.id))

    assert (answer["action"], answer["rung"]) == ("replacement_needed", "replace")
    assert restarts_of(aws, cluster.id) == []
    (announced,) = [e for e in published.drain() if e["detail-type"] == "Node Needs Replacement"]
    assert announced["detail"]["findings"][0]["code"] == "row_remap_failure"
    assert announced["detail"]["findings"][0]["gpu_index"] == 4


def test_given_five_clusters_when_the_third_recovers_within_the_window_then_the_circuit_opens_until_closed(
    aws: LocalAws, seed: Seed, api: ApiClient, recovery: RecoveryStore, published: EventCapture
) -> None:
    clusters = [seed(id=f"cluster_fleet{n:02d}", name=f"fleet-{n}", instance_count=1) for n in range(5)]

    answers = [send(cluster_alarm(c.id)) for c in clusters[:4]]

    assert [a["action"] for a in answers] == ["recovery_started", "recovery_started", "paused", "paused"]
    assert "3 of 5 clusters" in answers[2]["reasons"][0] and "(limit 2)" in answers[2]["reasons"][0]
    opened = [e for e in published.drain() if e["detail-type"] == "Recovery Circuit Open"]
    assert len(opened) == 1 and opened[0]["detail"]["tenant_id"] == "default"
    circuit = api.call("GET", "/v1/recovery/circuit", key="reader").json()["data"]
    assert circuit["state"] == "open"
    assert [p["cluster_id"] for p in circuit["paused"]] == ["cluster_fleet02", "cluster_fleet03"]
    assert api.call("POST", "/v1/recovery/circuit/close", key="reader").status == 403

    closed = api.call("POST", "/v1/recovery/circuit/close").json()["data"]

    assert closed["circuit"]["state"] == "closed" and closed["circuit"]["closed_by"].startswith("default/")
    assert [(r["cluster_id"], r["action"]) for r in closed["resumed"]] == [
        ("cluster_fleet02", "recovery_started"),
        ("cluster_fleet03", "recovery_started"),
    ]
    for cluster in clusters[:4]:
        assert [r.status for r in settled(aws, cluster.id)] == ["ready"]
    assert restarts_of(aws, clusters[4].id) == []
