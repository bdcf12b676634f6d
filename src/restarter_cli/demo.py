"""`restarter demo`: restarts of each kind on the embedded AWS (moto in-process, the real ASL,
the real handlers) over a small simulated GPU fleet. It shows each restart's progress, and
exits non-zero if any restart did not end the way it should, or if the whole demo did not
finish within its deadline."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from restarter_cli.demo_ladder import gpu_recovery_ladder
from restarter_cli.local import quiet_logs
from restarter_cli.output import EXIT_OK, EXIT_RESTART_FAILED, bar, fail, print_json

DEFAULT_DEADLINE_SECONDS = 600.0


class DemoDeadlineError(TimeoutError):
    """The demo ran past its overall deadline (real seconds)."""


@dataclass
class Deadline:
    seconds: float
    started: float = field(default_factory=time.monotonic)

    def remaining(self) -> float:
        return self.seconds - (time.monotonic() - self.started)

    def check(self, doing: str) -> None:
        if self.remaining() <= 0:
            raise DemoDeadlineError(f"the demo passed its deadline of {self.seconds:g} s while {doing}")


@dataclass
class DemoCase:
    title: str
    cluster: dict[str, Any]
    request: dict[str, Any]
    expect: str
    faults: list[tuple[str, Any]] = field(default_factory=list)
    # how the restart is asked for: the REST API, the intake directly (`cli`), a CloudWatch alarm
    # event to AlarmRecoveryFunction, or an SQS batch to QueueRestartFunction
    via: str = "api"


DEMO_CASES = [
    DemoCase(
        "graceful restart (the seed's basic example)",
        {"id": "cluster_abc123", "name": "ml-training-cluster", "instance_count": 2},
        {"wait_for_ready": True, "timeout_minutes": 20, "restart_reason": "Apply system updates"},
        "ready",
    ),
    DemoCase(
        "scale up + new image + environment (the seed's second example)",
        {"id": "cluster_scale01", "name": "llm-finetune", "instance_type": "g5.xlarge"},
        {
            "update_configuration": {"cpu_cores": 16},
            "update_docker_image": "tensorone/pytorch:2.2-cuda12.1",
            "environment_updates": {"MODEL_VERSION": "v2.0", "BATCH_SIZE": "128"},
            "apply_system_updates": True,
            "restart_reason": "Scale up for large model training",
        },
        "ready",
        via="cli",
    ),
    DemoCase(
        "forced recovery with a checkpoint",
        {"id": "cluster_err001", "name": "inference-prod", "status": "error", "labels": {"env": "production"}},
        {"force": True, "preserve_state": True, "restart_reason": "Error recovery - forced restart"},
        "ready",
    ),
    DemoCase(
        "alarm recovery: a CloudWatch alarm goes into ALARM",
        {"id": "cluster_alarm01", "name": "llm-serving", "instance_type": "g6e.xlarge", "status": "error"},
        {},
        "ready",
        via="alarm",
    ),
    DemoCase(
        "queued maintenance restart (SQS)",
        {"id": "cluster_queue01", "name": "batch-inference", "instance_type": "g5.2xlarge"},
        {"apply_system_updates": True, "restart_reason": "Queued maintenance"},
        "ready",
        via="queue",
    ),
    DemoCase(
        "deployment whose health check fails: rolled back",
        {"id": "cluster_bad001", "name": "eval-cluster", "instance_count": 2},
        {"update_docker_image": "tensorone/pytorch:2.3-broken", "restart_reason": "Deploy a broken image"},
        "rolled_back",
        faults=[("close_port", 8888)],
    ),
]

SCHEDULED_FLEET: list[dict[str, Any]] = [
    {"id": "cluster_night01", "name": "research-a100", "instance_type": "p4d.24xlarge", "instance_count": 2},
    {"id": "cluster_night02", "name": "research-l4", "instance_type": "g6.xlarge"},
    {"id": "cluster_night03", "name": "research-serving", "instance_type": "g5.2xlarge", "env": "production"},
]
NIGHTLY = {
    "name": "nightly-research-patching",
    "schedule_expression": "cron(0 3 * * ? *)",
    "timezone": "America/New_York",
    "flexible_window_minutes": 10,
    "window_minutes": 120,
    "description": "Patch the research fleet every night at 03:00 New York time",
    "rollout": {
        "labels": {"team": "research"},
        "request": {"apply_system_updates": True, "timeout_minutes": 30},
        "max_concurrency": 2,
        "failure_threshold": {"count": 1},
    },
}


def demo_start(aws: Any, gateway: Any, api_key: str, cluster_id: str, case: DemoCase) -> str:
    """Ask for the restart the way the case says; returns the restart id."""
    from restarter.domain.errors import RestarterError
    from restarter.services.restart_intake import accept_restart

    if case.via == "cli":
        return accept_restart(aws.deps, cluster_id, case.request, trigger="cli", requested_by="demo").id
    if case.via in ("alarm", "queue"):
        return demo_trigger(aws, cluster_id, case)
    answer = gateway.handle(
        "POST",
        f"/v1/clusters/{cluster_id}/restart",
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
        body=json.dumps({**case.request, "wait_for_ready": False}),
    )
    body = answer.json()
    if not body.get("success"):
        error = body.get("error", {})
        raise RestarterError(str(error.get("message")), {"code": error.get("code")})
    return str(body["data"]["restart_id"])


def demo_trigger(aws: Any, cluster_id: str, case: DemoCase) -> str:
    """Deliver a real-shaped alarm or SQS event (from events/) to its function, as AWS would."""
    from restarter.domain.errors import RestarterError
    from restarter_local.resources import events_dir

    if case.via == "alarm":
        event = json.loads((events_dir() / "alarm_state_change_cluster_dimension.json").read_text())
        text = json.dumps(event).replace("cluster_abc123", cluster_id)
        result, errored = aws.registry.invoke("AlarmRecoveryFunction", json.loads(text))
        if errored or not result.get("data", {}).get("restart_id"):
            raise RestarterError(f"the alarm did not start a recovery: {result}")
        return str(result["data"]["restart_id"])
    event = json.loads((events_dir() / "sqs_restart_batch.json").read_text())
    record = event["Records"][0]
    record["body"] = json.dumps({"cluster_id": cluster_id, **case.request})
    record.pop("md5OfBody", None)
    result, errored = aws.registry.invoke("QueueRestartFunction", {"Records": [record]})
    if errored or result.get("batchItemFailures"):
        raise RestarterError(f"the queued message was not accepted: {result}")
    restarts, _ = aws.deps.restarts.list_for_cluster(cluster_id, limit=1)
    return str(restarts[0].id)


def run_demo(time_scale: float, as_json: bool, deadline_seconds: float = DEFAULT_DEADLINE_SECONDS) -> int:
    quiet_logs()
    from restarter_local.engine import LocalAws

    deadline = Deadline(deadline_seconds)
    results: list[dict[str, Any]] = []
    try:
        with LocalAws(time_scale=time_scale, realistic=True) as aws:
            _run_cases(aws, results, as_json, deadline)
    except DemoDeadlineError as exc:
        fail(f"{exc}; finished so far: {len(results)} of {len(DEMO_CASES) + 2} (try a larger --time-scale)")
        if as_json:
            print_json({"ok": False, "deadline_passed": True, "results": results})
        return EXIT_RESTART_FAILED
    ok = all(r["status"] == r["expected"] for r in results)
    if as_json:
        print_json({"ok": ok, "results": results})
    else:
        print_results(results, ok)
    return EXIT_OK if ok else EXIT_RESTART_FAILED


def print_results(results: list[dict[str, Any]], ok: bool) -> None:
    print("\n    cluster         via   expected     got          downtime  duration  (simulated seconds)")
    for r in results:
        mark = "ok " if r["status"] == r["expected"] else "BAD"
        print(
            f"{mark} {r['cluster_id']:<15} {r['via']:<5} {r['expected']:<12} {r['status']:<12} "
            f"{r.get('downtime_seconds') or 0:>8}  {r.get('restart_duration_seconds') or 0:>8}"
        )
    print("\nall restarts ended as expected" if ok else "\nSOME RESTARTS DID NOT END AS EXPECTED")


def _run_cases(aws: Any, results: list[dict[str, Any]], as_json: bool, deadline: Deadline) -> None:
    from restarter.domain.errors import RestarterError
    from restarter.domain.models import PortMapping
    from restarter_local.fleet import ClusterSpec, seed_cluster
    from restarter_local.gateway import LocalApiGateway

    assert aws.deps is not None
    gateway = LocalApiGateway(aws)
    api_key, _ = aws.api_keys.create_key("default", ["read", "restart"], name="demo", now=aws.clock.now())
    for case in DEMO_CASES:
        spec = ClusterSpec(
            ports=[PortMapping(internal_port=8888, external_port=30888, description="Jupyter")],
            environment={"MODEL_VERSION": "v1.0"},
            **case.cluster,
        )
        cluster = seed_cluster(aws, spec)
        for fault, arg in case.faults:
            if fault == "close_port":
                aws.agent.close_port(cluster.instance_ids[-1], arg)
        if not as_json:
            shape = f"{len(cluster.instance_ids)}x {cluster.instance_type}"
            print(f"\n== {case.title}: {cluster.id} ({cluster.name}, {shape})")
        started = time.monotonic()
        try:
            restart_id = demo_start(aws, gateway, api_key, cluster.id, case)
        except RestarterError as exc:
            results.append({"cluster_id": cluster.id, "via": case.via, "expected": case.expect, "status": exc.code})
            continue
        last = None
        while True:
            stored = aws.deps.restarts.get(restart_id)
            assert stored is not None
            current = stored[0]
            line = (current.progress.phase, current.progress.percentage, current.status)
            if line != last and not as_json:
                print(
                    f"  [{bar(current.progress.percentage)}] {current.progress.percentage:3d}%"
                    f"  {current.progress.phase:<24} {current.status:<11} {time.monotonic() - started:5.1f}s"
                )
                last = line
            if current.is_terminal:
                break
            deadline.check(f"restarting {cluster.id}")
            time.sleep(0.05)
        aws.wait_for_execution(current.execution_arn or "", timeout=max(1.0, deadline.remaining()))
        results.append(
            {
                "cluster_id": cluster.id,
                "via": case.via,
                "restart_id": current.id,
                "expected": case.expect,
                "status": current.status,
                "downtime_seconds": current.downtime_seconds,
                "restart_duration_seconds": current.restart_duration_seconds,
                "applied": current.configuration_updates.applied,
                "error": current.error.message if current.error else None,
            }
        )
    results.append(gpu_recovery_ladder(aws, gateway, api_key, as_json, deadline))
    results.append(scheduled_rollout(aws, gateway, api_key, as_json, deadline))


def scheduled_rollout(aws: Any, gateway: Any, api_key: str, as_json: bool, deadline: Deadline) -> dict[str, Any]:
    """Create a schedule through the API, let the embedded Scheduler fire it (twice, as a
    redelivery would), and follow the rollout it starts."""
    from restarter.wiring import get_rollout_dependencies
    from restarter_local.fleet import ClusterSpec, seed_cluster

    for cluster in SCHEDULED_FLEET:
        labels = {"team": "research", **({"env": "production"} if cluster.get("env") else {})}
        seed_cluster(aws, ClusterSpec(**{k: v for k, v in cluster.items() if k != "env"}, labels=labels))
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    created = gateway.handle("POST", "/v1/schedules", headers=headers, body=json.dumps(NIGHTLY)).json()
    expected = f"{len(SCHEDULED_FLEET)}/{len(SCHEDULED_FLEET)} ready"
    row: dict[str, Any] = {"cluster_id": f"{len(SCHEDULED_FLEET)} clusters", "via": "sched", "expected": expected}
    if not created.get("success"):
        return {**row, "status": str(created.get("error", {}).get("code"))}
    if not as_json:
        print(
            f"\n== scheduled rollout: schedule {NIGHTLY['name']} ({NIGHTLY['schedule_expression']}"
            f" {NIGHTLY['timezone']}) over {', '.join(created['meta']['clusters_now'])}"
        )
    fired_at = aws.clock.now()
    group = "restarter-default"
    first = aws.fire_schedule(NIGHTLY["name"], group, fired_at)["data"]
    again = aws.fire_schedule(NIGHTLY["name"], group, fired_at, attempt=2)["data"]
    if not as_json:
        print(f"  fired: rollout {first['rollout_id']} for window {first['maintenance_window']}")
        same = "the same rollout, nothing restarted twice" if not again["started"] else "A SECOND ROLLOUT"
        print(f"  the firing delivered again: {same}")
    store = get_rollout_dependencies().store
    started, last = time.monotonic(), None
    while True:
        stored = store.get(first["rollout_id"])
        assert stored is not None
        record = stored[0]
        line = [(r.cluster_id, r.status) for r in record.results]
        if line != last and not as_json:
            cells = "  ".join(f"{cid.removeprefix('cluster_')}:{status}" for cid, status in line)
            print(f"  {time.monotonic() - started:5.1f}s  {cells}")
            last = line
        if record.status == "completed":
            break
        deadline.check(f"following the scheduled rollout {record.rollout_id}")
        time.sleep(0.1)
    ok = sum(1 for r in record.results if r.success)
    downtimes = [r.downtime_seconds or 0 for r in record.results]
    status = f"{ok}/{len(record.results)} ready" if not again["started"] else "duplicated"
    return {
        **row,
        "status": status,
        "rollout_id": record.rollout_id,
        "downtime_seconds": max(downtimes, default=0),
        "restart_duration_seconds": rollout_duration_seconds(record),
    }


def rollout_duration_seconds(record: Any) -> int:
    """Simulated seconds from the first item's start to the last item's end: the rollout's own
    duration (its items overlap, so it is not their sum)."""
    from restarter.domain.models import parse_time

    started = [parse_time(r.started_at) for r in record.results if r.started_at]
    finished = [parse_time(r.finished_at) for r in record.results if r.finished_at]
    if not started or not finished:
        return 0
    return max(0, round((max(finished) - min(started)).total_seconds()))
