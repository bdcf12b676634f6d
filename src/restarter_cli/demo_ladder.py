"""The demo's GPU recovery: a GPU falls off the bus (Xid 79) and alarm recovery climbs the node
ladder until the node is healthy again.

health check (Xid 79, a GPU missing) → alarm → reboot (the GPU is still missing: a reboot does
not bring back a GPU that fell off the bus) → stop/start on a new host → ready.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

LADDER_CLUSTER: dict[str, Any] = {"id": "cluster_gpu079", "name": "pretrain-a100", "instance_type": "p4d.24xlarge"}
FALLEN_GPU = 3


def gpu_recovery_ladder(aws: Any, gateway: Any, api_key: str, as_json: bool, deadline: Any) -> dict[str, Any]:
    from restarter.domain.models import PortMapping
    from restarter_local.fleet import ClusterSpec, seed_cluster
    from restarter_local.moto_ext.gpu_sim import GpuFault
    from restarter_local.resources import events_dir

    cluster = seed_cluster(
        aws,
        ClusterSpec(ports=[PortMapping(internal_port=8888, external_port=30888)], **LADDER_CLUSTER),
    )
    row: dict[str, Any] = {"cluster_id": cluster.id, "via": "alarm", "expected": "ready"}
    aws.agent.inject_gpu_fault(cluster.instance_ids[0], GpuFault(kind="xid", gpu=FALLEN_GPU, xid=79))
    say = (lambda *_: None) if as_json else print
    say(f"\n== GPU recovery ladder: {cluster.id} ({cluster.name}, 1x {cluster.instance_type}), GPU {FALLEN_GPU} Xid 79")

    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    gateway.handle("POST", f"/v1/clusters/{cluster.id}/health-check", headers=headers)
    health = _collected_health(gateway, cluster.id, headers, deadline)
    for node in health["instances"]:
        for finding in (node.get("assessment") or {}).get("findings", []):
            say(f"  health check: [{finding['action']}] {finding['code']}: {finding['summary']}")

    event = json.loads((events_dir() / "alarm_state_change_cluster_dimension.json").read_text())
    alarm = json.loads(json.dumps(event).replace("cluster_abc123", cluster.id))
    # its own transition (the event id is the alarm's ARN and the state's timestamp)
    alarm["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"restarter-demo://{cluster.id}/xid79"))
    alarm["detail"]["state"]["timestamp"] = aws.clock.now().strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    answer, errored = aws.registry.invoke("AlarmRecoveryFunction", alarm)
    first = answer.get("data", {}) if not errored else {}
    if not first.get("restart_id"):
        return {**row, "status": f"not started: {answer}"}
    say(f"  alarm: recovery {first['restart_id']} rung {first.get('rung')}")
    started = time.monotonic()
    rungs, record = [], None
    seen: set[str] = set()
    while True:
        records, _ = aws.deps.restarts.list_for_cluster(cluster.id, limit=10)
        for current in sorted(records, key=lambda r: r.restart_initiated_at):
            if current.is_terminal and current.id not in seen:
                seen.add(current.id)
                rungs.append(current.node_action)
                codes = sorted(
                    {f["code"] for f in (current.error.details.get("findings", []) if current.error else [])}
                )
                said = f", findings {', '.join(codes)}" if codes else ""
                say(
                    f"  {time.monotonic() - started:5.1f}s  {current.node_action or '-':<10} "
                    f"{current.id}: {current.status}{said}"
                )
            record = current
        if record is not None and record.is_terminal and record.id in seen and _settled(aws, cluster.id):
            break
        deadline.check(f"recovering {cluster.id}")
        time.sleep(0.05)
    assert record is not None
    return {
        **row,
        "restart_id": record.id,
        "status": record.status,
        "rungs": rungs,
        "downtime_seconds": record.downtime_seconds,
        "restart_duration_seconds": record.restart_duration_seconds,
    }


def _collected_health(gateway: Any, cluster_id: str, headers: dict[str, str], deadline: Any) -> dict[str, Any]:
    while True:
        health = gateway.handle("GET", f"/v1/clusters/{cluster_id}/health", headers=headers).json()["data"]
        if health.get("pending_check") is None:
            return dict(health)
        deadline.check(f"checking the health of {cluster_id}")
        time.sleep(0.05)


def _settled(aws: Any, cluster_id: str) -> bool:
    """No restart holds the cluster and no execution of it still runs (the ladder may go on)."""
    cluster = aws.deps.clusters.get(cluster_id)
    running = [e for e in aws.executions() if e["status"] == "RUNNING"]
    return (
        cluster is not None and cluster.current_restart_id is None and not running and not aws.execution_events_pending
    )
