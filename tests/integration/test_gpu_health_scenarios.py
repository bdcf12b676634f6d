"""GPU health on the real ASL: a restart is ready only when every GPU is truly healthy.

Each scenario runs the restart state machine on the embedded AWS over a simulated p4d.24xlarge
(8 A100s) whose GPUs answer the health script with the captured nvidia-smi and kernel output,
adapted only where the fault needs it (see restarter_local.moto_ext.gpu_sim).
"""

from __future__ import annotations

from typing import Any

from restarter_local.engine import LocalAws
from restarter_local.moto_ext.gpu_sim import GpuFault
from tests.integration.harness import ApiClient, RestartOutcome, Seed

Run = Any


def one_node(seed: Seed, cluster_id: str = "cluster_abc123") -> Any:
    return seed(id=cluster_id, instance_count=1)


def findings_of(outcome: RestartOutcome) -> list[dict[str, Any]]:
    assert outcome.record.error is not None, outcome.record.status
    return list(outcome.record.error.details.get("findings", []))


def test_given_a_gpu_that_enumerates_late_within_the_settle_window_when_restarted_then_ready(
    aws: LocalAws, seed: Seed, run_restart: Run
) -> None:
    cluster = one_node(seed)
    # GPU 5 shows up 300 simulated seconds after each boot: after the first health check
    # (the reboot's 180 s settle and the start of the services come first), within the 120 s window
    aws.agent.inject_gpu_fault(cluster.instance_ids[0], GpuFault(kind="gpu_missing", gpu=5, late_seconds=300))

    outcome = run_restart(cluster.id, {"force": True})

    assert outcome.record.status == "ready", outcome.record.error
    health = outcome.record.phase_state["health_checks"]
    assert health["checks"] >= 2  # the first report lacked the GPU, a later one had all 8
    assert aws.deps is not None
    report = aws.deps.health.report(cluster.id, cluster.instance_ids[0])
    assert report is not None and report.assessment is not None
    assert (report.assessment.visible_gpus, report.verdict, report.missing_streak) == (8, "healthy", 0)


def test_given_a_gpu_missing_beyond_the_settle_window_when_restarted_then_failed_with_the_finding(
    aws: LocalAws, seed: Seed, run_restart: Run
) -> None:
    cluster = one_node(seed)
    # missing until a stop/start moves the instance to a new host: a graceful restart reboots
    aws.agent.inject_gpu_fault(cluster.instance_ids[0], GpuFault(kind="gpu_missing", gpu=5))

    outcome = run_restart(cluster.id)

    assert outcome.record.status in ("failed", "rolled_back")
    assert outcome.record.error is not None and outcome.record.error.phase == "health_checks"
    (finding,) = findings_of(outcome)
    assert finding["code"] == "gpu_missing" and finding["instance_id"] == cluster.instance_ids[0]
    assert finding["action"] == "reboot"
    assert "7 of 8" in finding["summary"]
    assert outcome.record.error.details["waited_seconds"] >= 120
    assert outcome.lock_holder is None and outcome.cluster.current_restart_id is None


def test_given_an_application_xid_alone_when_restarted_then_ready_with_the_finding_reported(
    aws: LocalAws, seed: Seed, run_restart: Run, api: ApiClient
) -> None:
    cluster = one_node(seed)
    aws.agent.inject_gpu_fault(cluster.instance_ids[0], GpuFault(kind="xid", gpu=2, xid=13))

    outcome = run_restart(cluster.id)

    assert outcome.record.status == "ready", outcome.record.error
    reported = outcome.record.phase_state["health_checks"]["reported_findings"]
    assert [(f["code"], f["action"], f["gpu_index"]) for f in reported] == [("xid_13", "report", 2)]
    assert "NVRM: Xid" in reported[0]["evidence"]
    answer = api.call("GET", f"/v1/clusters/{cluster.id}/health", key="reader")
    assert answer.status == 200
    data = answer.json()["data"]
    assert data["verdict"] == "healthy" and data["worst_action"] == "report"
    (node,) = data["instances"]
    assert node["restart_id"] == outcome.record.id
    assert [f["xid"] for f in node["assessment"]["findings"]] == [13]


def test_given_a_row_remap_failure_when_restarted_then_it_fails_at_once_as_a_replacement(
    aws: LocalAws, seed: Seed, run_restart: Run
) -> None:
    cluster = one_node(seed)
    # a GPU whose memory could not remap a row: no reboot or new host fixes it
    aws.agent.inject_gpu_fault(cluster.instance_ids[0], GpuFault(kind="row_remap_failure", gpu=6))

    outcome = run_restart(cluster.id, {"force": True})

    assert outcome.record.status in ("failed", "rolled_back")
    (finding,) = findings_of(outcome)
    assert (finding["code"], finding["action"], finding["gpu_index"]) == ("row_remap_failure", "replace", 6)
    assert finding["gpu_uuid"].startswith("GPU-")
    assert outcome.record.error is not None and outcome.record.error.details["checks"] == 1  # no settle wait
