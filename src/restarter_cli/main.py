"""The `restarter` command.

`restarter demo` runs restarts on the embedded AWS (moto in-process, the real ASL, the real
handlers) over a small simulated GPU fleet, shows each restart's progress, and exits non-zero
if any restart did not end the way it should.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from restarter_cli.client import DEFAULT_URL


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


def _quiet_logs() -> None:
    """Local runs print their results on stdout: logs go to stderr, errors only."""
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
    os.environ.setdefault("LOG_LEVEL", "ERROR")
    logging.getLogger().setLevel(logging.ERROR)
    # moto's interpreter logs every failed execution at ERROR; the demo reports outcomes itself.
    logging.getLogger("moto").setLevel(logging.CRITICAL)
    from restarter.observability import logger

    logger.setLevel("ERROR")
    for handler in logging.getLogger(logger.name).handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(_CurrentStderr())


class _CurrentStderr:
    """Whatever `sys.stderr` is at the time of writing (it may be replaced after setup)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _bar(percentage: int, width: int = 24) -> str:
    filled = round(width * percentage / 100)
    return "#" * filled + "-" * (width - filled)


def _demo_start(aws: Any, gateway: Any, api_key: str, cluster_id: str, case: DemoCase) -> str:
    """Ask for the restart the way the case says; returns the restart id."""
    from restarter.domain.errors import RestarterError
    from restarter.services.restart_intake import accept_restart

    if case.via == "cli":
        return accept_restart(aws.deps, cluster_id, case.request, trigger="cli", requested_by="demo").id
    if case.via in ("alarm", "queue"):
        return _demo_trigger(aws, cluster_id, case)
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


EVENTS_DIR = Path(__file__).resolve().parents[2] / "events"


def _demo_trigger(aws: Any, cluster_id: str, case: DemoCase) -> str:
    """Deliver a real-shaped alarm or SQS event (from events/) to its function, as AWS would."""
    from restarter.domain.errors import RestarterError

    if case.via == "alarm":
        event = json.loads((EVENTS_DIR / "alarm_state_change_cluster_dimension.json").read_text())
        text = json.dumps(event).replace("cluster_abc123", cluster_id)
        result, errored = aws.registry.invoke("AlarmRecoveryFunction", json.loads(text))
        if errored or not result.get("data", {}).get("restart_id"):
            raise RestarterError(f"the alarm did not start a recovery: {result}")
        return str(result["data"]["restart_id"])
    event = json.loads((EVENTS_DIR / "sqs_restart_batch.json").read_text())
    record = event["Records"][0]
    record["body"] = json.dumps({"cluster_id": cluster_id, **case.request})
    record.pop("md5OfBody", None)
    result, errored = aws.registry.invoke("QueueRestartFunction", {"Records": [record]})
    if errored or result.get("batchItemFailures"):
        raise RestarterError(f"the queued message was not accepted: {result}")
    restarts, _ = aws.deps.restarts.list_for_cluster(cluster_id, limit=1)
    return str(restarts[0].id)


def run_demo(time_scale: float, as_json: bool) -> int:
    _quiet_logs()
    from restarter.domain.errors import RestarterError
    from restarter.domain.models import PortMapping
    from restarter_local.engine import LocalAws
    from restarter_local.fleet import ClusterSpec, seed_cluster
    from restarter_local.gateway import LocalApiGateway

    results: list[dict[str, Any]] = []
    with LocalAws(time_scale=time_scale, realistic=True) as aws:
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
                restart_id = _demo_start(aws, gateway, api_key, cluster.id, case)
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
                        f"  [{_bar(current.progress.percentage)}] {current.progress.percentage:3d}%"
                        f"  {current.progress.phase:<24} {current.status:<11} {time.monotonic() - started:5.1f}s"
                    )
                    last = line
                if current.is_terminal:
                    break
                time.sleep(0.05)
            aws.wait_for_execution(current.execution_arn or "")
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
        results.append(_demo_scheduled_rollout(aws, gateway, api_key, as_json))
    ok = all(r["status"] == r["expected"] for r in results)
    if as_json:
        print(json.dumps({"ok": ok, "results": results}, indent=2))
    else:
        print("\n    cluster         via   expected     got          downtime  duration  (simulated seconds)")
        for r in results:
            mark = "ok " if r["status"] == r["expected"] else "BAD"
            print(
                f"{mark} {r['cluster_id']:<15} {r['via']:<5} {r['expected']:<12} {r['status']:<12} "
                f"{r.get('downtime_seconds') or 0:>8}  {r.get('restart_duration_seconds') or 0:>8}"
            )
        print("\nall restarts ended as expected" if ok else "\nSOME RESTARTS DID NOT END AS EXPECTED")
    return 0 if ok else 1


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


def _demo_scheduled_rollout(aws: Any, gateway: Any, api_key: str, as_json: bool) -> dict[str, Any]:
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
        time.sleep(0.1)
    ok = sum(1 for r in record.results if r.success)
    downtimes = [r.downtime_seconds or 0 for r in record.results]
    status = f"{ok}/{len(record.results)} ready" if not again["started"] else "duplicated"
    return {**row, "status": status, "rollout_id": record.rollout_id, "downtime_seconds": max(downtimes, default=0)}


# ------------------------------------------------------------------ API clients

TERMINAL = {"ready", "failed", "timed_out", "cancelled", "rolled_back"}
EXIT_OK, EXIT_RESTART_FAILED, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2, 3
EXIT_USAGE = 2  # bad input (a file, an option): like argparse's own usage errors
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT


def _print_error(answer: Any) -> None:
    error = answer.error
    print(f"error {answer.status} {error.get('code')}: {error.get('message')}", file=sys.stderr)
    details = error.get("details")
    if details:
        print(json.dumps(details, indent=2), file=sys.stderr)


def _follow(client: Any, restart_id: str, as_json: bool, poll: float = 0.5) -> int:
    """Show a progress bar until the restart ends; the exit code says how it ended."""
    last = None
    while True:
        answer = client.restart_status(restart_id)
        if not answer.ok:
            _print_error(answer)
            return EXIT_REFUSED
        data = answer.body["data"]
        progress = data["restart_progress"]
        line = (progress["phase"], progress["percentage"], data["status"])
        if line != last and not as_json:
            print(_progress_line(progress, data["status"]))
            last = line
        if data["status"] in TERMINAL:
            if as_json:
                print(json.dumps(data, indent=2))
            else:
                _summary(data)
            return EXIT_OK if data["status"] == "ready" else EXIT_RESTART_FAILED
        time.sleep(poll)


def _progress_line(progress: dict[str, Any], status: str) -> str:
    percentage = int(progress["percentage"])
    return f"[{_bar(percentage)}] {percentage:3d}%  {progress['phase']:<24} {status}"


def _summary(data: dict[str, Any]) -> None:
    print(f"restart {data['id']} of {data['cluster_id']}: {data['status']}")
    if data.get("downtime_seconds") is not None:
        print(f"  downtime {data['downtime_seconds']}s, duration {data['restart_duration_seconds']}s")
    for change in data.get("configuration_changes") or []:
        print(f"  applied {change}")
    if data.get("error"):
        print(f"  error in {data['error'].get('phase')}: {data['error'].get('message')}")
    for note in data.get("rollback_notes") or []:
        print(f"  note: {note}")


def run_restart(args: argparse.Namespace) -> int:
    from restarter_cli.client import RestarterClient

    body: dict[str, Any] = json.loads(Path(args.request).read_text()) if args.request else {}
    for flag, field_name in (
        ("force", "force"),
        ("preserve_state", "preserve_state"),
    ):
        if getattr(args, flag):
            body[field_name] = True
    for flag, field_name in (
        ("grace_period", "grace_period_minutes"),
        ("timeout", "timeout_minutes"),
        ("reason", "restart_reason"),
    ):
        if getattr(args, flag) is not None:
            body[field_name] = getattr(args, flag)
    client = RestarterClient(args.url, args.api_key)
    answer = client.restart(args.cluster_id, body)
    if not answer.ok:
        if args.json:
            print(json.dumps(answer.body, indent=2))
        _print_error(answer)
        return EXIT_REFUSED
    data = answer.body["data"]
    if not args.json:
        print(
            f"restart {data['restart_id']} of {data['id']} accepted ({data['restart_type']}),"
            f" estimated completion {data['estimated_completion_time']}"
        )
        for change in data["configuration_updates"]["pending"]:
            print(f"  pending {change}")
    if args.wait:
        return _follow(client, data["restart_id"], args.json)
    if args.json:
        print(json.dumps(answer.body, indent=2))
    return EXIT_OK


def run_status(args: argparse.Namespace) -> int:
    from restarter_cli.client import RestarterClient

    client = RestarterClient(args.url, args.api_key)
    if args.watch:
        return _follow(client, args.restart_id, args.json)
    answer = client.restart_status(args.restart_id)
    if not answer.ok:
        _print_error(answer)
        return EXIT_REFUSED
    data = answer.body["data"]
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(_progress_line(data["restart_progress"], data["status"]))
        _summary(data)
    return EXIT_OK


def run_clusters(args: argparse.Namespace) -> int:
    from restarter_cli.client import RestarterClient

    answer = RestarterClient(args.url, args.api_key).clusters(args.status, args.label)
    if not answer.ok:
        _print_error(answer)
        return EXIT_REFUSED
    if args.json:
        print(json.dumps(answer.body["data"], indent=2))
        return EXIT_OK
    print(f"{'cluster':<18} {'name':<22} {'status':<11} {'type':<16} {'n':>3} {'$/h':>9}")
    for c in answer.body["data"]:
        rate = f"{c['hourly_rate']:.2f}" if c.get("hourly_rate") is not None else "-"
        shape = f"{c['instance_type']:<16} {c['instance_count']:>3}"
        print(f"{c['id']:<18} {c['name']:<22} {c['status']:<11} {shape} {rate:>9}")
    return EXIT_OK


# ------------------------------------------------------------------ rollouts and schedules


def _targets(args: argparse.Namespace) -> dict[str, Any]:
    """`--rollout FILE` (a whole spec), else the target flags and `--request FILE`."""
    if getattr(args, "rollout", None):
        loaded = json.loads(Path(args.rollout).read_text())
        return dict(loaded)
    spec: dict[str, Any] = {}
    if args.labels:
        spec["labels"] = dict(pair.split("=", 1) for pair in args.labels.split(","))
    if args.cluster_ids:
        spec["cluster_ids"] = args.cluster_ids.split(",")
    if args.name_pattern:
        spec["name_pattern"] = args.name_pattern
    if args.request:
        spec["request"] = json.loads(Path(args.request).read_text())
    if args.max_concurrency is not None:
        spec["max_concurrency"] = args.max_concurrency
    return spec


def _rollout_line(data: dict[str, Any]) -> str:
    finished = sum(1 for r in data["results"] if r["status"] not in ("pending", "running"))
    total = data["total_clusters"]
    percentage = round(100 * finished / total) if total else 100
    return (
        f"[{_bar(percentage)}] {finished}/{total} done  {data['successful_updates']} ok"
        f"  {data['failed']} failed  {data['skipped']} skipped  {data['status']}"
    )


def _rollout_report(data: dict[str, Any]) -> None:
    print(f"rollout {data['rollout_id']} ({data['maintenance_window']}): {data['status']}")
    for r in data["results"]:
        detail = f"downtime {r['downtime_seconds']}s" if r.get("downtime_seconds") is not None else r.get("error") or ""
        print(f"  {r['cluster_id']:<20} {r['name']:<22} {r['status']:<22} {detail}")


def _follow_rollout(client: Any, rollout_id: str, as_json: bool, poll: float = 0.5) -> int:
    last = None
    while True:
        answer = client.rollout(rollout_id)
        if not answer.ok:
            _print_error(answer)
            return EXIT_REFUSED
        data = answer.body["data"]
        line = _rollout_line(data)
        if line != last and not as_json:
            print(line)
            last = line
        if data["status"] == "completed":
            if as_json:
                print(json.dumps(data, indent=2))
            else:
                _rollout_report(data)
            return EXIT_OK if data["successful_updates"] == data["total_clusters"] else EXIT_RESTART_FAILED
        time.sleep(poll)


def _resume_body(args: argparse.Namespace) -> dict[str, Any] | None:
    """`rollout resume`: a later maintenance window from the flags, or none (the rollout's own).
    `--window-minutes` alone sends a duration, so the API's clock decides when the window ends."""
    from datetime import UTC, datetime

    start, end, minutes = args.window_start, args.window_end, args.window_minutes
    if start is None and end is None and minutes is None:
        return None
    if end is not None and minutes is not None:
        raise ValueError("give --window-end or --window-minutes, not both")
    if start is not None and end is None and minutes is None:
        raise ValueError("--window-start needs --window-end or --window-minutes")
    opens = start or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    window: dict[str, Any] = {"id": args.window_id or f"resume@{opens}"}
    if start is not None:
        window["start"] = start
    if end is not None:
        window["end"] = end
    if minutes is not None:
        window["duration_minutes"] = minutes
    return {"maintenance_window": window}


def run_rollout(args: argparse.Namespace) -> int:
    from restarter_cli.client import RestarterClient

    client = RestarterClient(args.url, args.api_key)
    if args.action == "status":
        if args.watch:
            return _follow_rollout(client, args.target, args.json)
        answer = client.rollout(args.target)
    elif args.action == "resume":
        answer = client.request("POST", f"/rollouts/{args.target}/resume", _resume_body(args))
    else:
        spec = json.loads(Path(args.target).read_text())
        answer = client.start_rollout(spec)
    if not answer.ok:
        _print_error(answer)
        return EXIT_REFUSED
    data = answer.body["data"]
    if args.action in ("start", "resume") and args.wait:
        if not args.json:
            verb = "started" if args.action == "start" else f"resumed (attempt {data['attempt']})"
            print(f"rollout {data['rollout_id']} {verb} over {data['total_clusters']} clusters")
        return _follow_rollout(client, data["rollout_id"], args.json)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(_rollout_line(data))
        _rollout_report(data)
    return EXIT_OK


def run_schedule(args: argparse.Namespace) -> int:
    from restarter_cli.client import RestarterClient

    client = RestarterClient(args.url, args.api_key)
    if args.action == "create":
        if not args.name or not args.expression:
            print("error: schedule create needs NAME and --expression", file=sys.stderr)
            return EXIT_REFUSED
        body: dict[str, Any] = {
            "name": args.name,
            "schedule_expression": args.expression,
            "timezone": args.timezone,
            "flexible_window_minutes": args.flexible_window,
            "window_minutes": args.window,
            "rollout": _targets(args),
        }
        if args.description:
            body["description"] = args.description
        answer = client.create_schedule(body)
    elif args.action in ("delete", "fire"):
        if not args.name:
            print(f"error: schedule {args.action} needs NAME", file=sys.stderr)
            return EXIT_REFUSED
        answer = client.delete_schedule(args.name) if args.action == "delete" else _fire_locally(client, args.name)
    else:
        answer = client.schedules()
    if not answer.ok:
        _print_error(answer)
        return EXIT_REFUSED
    data = answer.body["data"]
    if args.json:
        print(json.dumps(answer.body, indent=2))
    elif args.action == "list":
        print(f"{'schedule':<28} {'expression':<26} {'timezone':<16} {'window':>6} {'state':<8}")
        for item in data:
            state = "enabled" if item["enabled"] else "disabled"
            print(
                f"{item['name']:<28} {item['schedule_expression']:<26} {item['timezone']:<16} "
                f"{item['window_minutes']:>5}m {state:<8}"
            )
    elif args.action == "create":
        covered = answer.body["meta"].get("clusters_now", [])
        print(f"schedule {data['name']} created: {data['schedule_expression']} ({data['timezone']})")
        print(f"  covers {len(covered)} clusters now: {', '.join(covered) or '-'} (resolved again at each firing)")
    elif args.action == "fire":
        print(f"schedule {args.name} fired: rollout {data['rollout_id']} over {data['total_clusters']} clusters")
        print(f"  follow it: restarter rollout status {data['rollout_id']} --watch")
    else:
        print(f"schedule {data['name']} deleted")
    return EXIT_OK


def _fire_locally(client: Any, name: str) -> Any:
    """`POST /local/schedules/{name}/fire` on a `restarter serve` (moto never fires schedules)."""
    base = client.url
    client.url = base.removesuffix("/v1")
    try:
        return client.request("POST", f"/local/schedules/{name}/fire")
    finally:
        client.url = base


# ------------------------------------------------------------------ local runtime


DEV_KEY = "rk_0123abcd_LocalDevOnly-NotASecret_0123456789abcdefXYZ"


def run_invoke(args: argparse.Namespace) -> int:
    """Like `sam local invoke`, on the embedded AWS: one event to one function, executions to the end."""
    _quiet_logs()
    from restarter_local.engine import LocalAws
    from restarter_local.fleet_file import default_fleet_path, load_fleet, seed_fleet

    try:
        event = json.loads(Path(args.event).read_text())
    except (OSError, ValueError) as exc:
        print(f"error: cannot read event {args.event}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    with LocalAws(time_scale=args.time_scale) as aws:
        if args.function not in aws.registry.specs:
            names = ", ".join(sorted(aws.registry.specs))
            print(f"error: unknown function {args.function} (template.yaml has: {names})", file=sys.stderr)
            return EXIT_REFUSED
        assert aws.deps is not None
        seed_fleet(aws, load_fleet(Path(args.fleet) if args.fleet else default_fleet_path()))
        aws.api_keys.put_known_key(DEV_KEY, "default", ["read", "restart"], name="local-dev")
        result, errored = aws.registry.invoke(args.function, event)
        aws.wait_for_rollouts(timeout=args.wait_timeout)
        restarts = []
        for execution in aws.executions():
            stored = aws.deps.restarts.get(execution["name"])
            if stored:
                restarts.append(stored[0].model_dump(mode="json", exclude={"phase_state"}))
        rollouts = _rollout_reports(aws, result)
    print(
        json.dumps(
            {
                "function": args.function,
                "errored": errored,
                "result": result,
                "rollouts": rollouts,
                "restarts": restarts,
            },
            indent=2,
            default=str,
        )
    )
    return EXIT_RESTART_FAILED if errored else EXIT_OK


def _rollout_reports(aws: Any, result: Any) -> list[dict[str, Any]]:
    """The seed-shaped report of every rollout the invocation started (one with no cluster to
    restart has no execution: the handler's answer names it)."""
    from restarter.domain.rollouts import summarize
    from restarter.wiring import get_rollout_dependencies

    store = get_rollout_dependencies().store
    ids = {e["name"].rsplit("-", 1)[0] for e in aws.rollout_executions()}
    named = result.get("data", {}).get("rollout_id") if isinstance(result, dict) else None
    if isinstance(named, str):
        ids.add(named)
    reports = []
    for rollout_id in sorted(ids):
        stored = store.get(rollout_id)
        if stored:
            reports.append(summarize(stored[0]))
    return reports


def run_fault(args: argparse.Namespace) -> int:
    """Inject a fault into a running `restarter serve` (local only)."""
    from restarter_cli.client import RestarterClient

    client = RestarterClient(args.url, args.api_key)
    client.url = client.url.removesuffix("/v1")
    fault = {
        k: v
        for k, v in {
            "kind": args.kind,
            "cluster_id": args.cluster_id,
            "instance": args.instance,
            "port": args.port,
            "op": args.op,
            "service": args.service,
            "action": args.action,
            "times": args.times,
        }.items()
        if v is not None
    }
    answer = client.request("POST", "/local/faults", fault)
    if not answer.ok:
        _print_error(answer)
        return EXIT_REFUSED
    print(json.dumps(answer.body["data"]) if args.json else f"injected {args.kind}")
    return EXIT_OK


def run_serve(args: argparse.Namespace) -> int:
    from restarter_local.server import main_serve

    return int(
        main_serve(args.host, args.port, Path(args.fleet) if args.fleet else None, args.time_scale, args.api_key)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="restarter", description="Restart GPU clusters safely.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run restarts of each kind on the embedded AWS")
    demo.add_argument("--time-scale", type=float, default=300.0, help="simulated seconds per real second")
    demo.add_argument("--json", action="store_true", help="print the results as JSON")

    serve = commands.add_parser("serve", help="the REST API on loopback, over a simulated fleet")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--fleet", help="fleet file (YAML or JSON); default: the built-in fleet")
    serve.add_argument("--time-scale", type=float, default=60.0, help="simulated seconds per real second")
    serve.add_argument("--api-key", help="use this key (format rk_<8 hex>_<secret>) instead of a new one")

    invoke = commands.add_parser("invoke", help="deliver an event to a function on the embedded AWS")
    invoke.add_argument("function", help="logical ID in template.yaml, e.g. StartRestartFunction")
    invoke.add_argument("-e", "--event", required=True, help="event JSON file (see events/)")
    invoke.add_argument("--fleet", help="fleet file; default: the built-in fleet")
    invoke.add_argument("--time-scale", type=float, default=600.0)
    invoke.add_argument("--wait-timeout", type=float, default=120.0, help="real seconds to wait for executions")

    for name, help_text in (
        ("fault", "inject a fault into a running `restarter serve` (local only)"),
        ("restart", "restart a cluster through the API"),
        ("status", "show a restart's progress"),
        ("clusters", "list clusters"),
        (
            "rollout",
            "start a rollout from a spec file, show one, or resume one (in a later window): "
            "rollout start FILE | rollout status ID | rollout resume ID [--window-minutes N]",
        ),
        (
            "schedule",
            "scheduled rollouts: schedule create NAME --expression ... | schedule list | schedule delete NAME",
        ),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--url", help=f"API base URL (env RESTARTER_URL, default {DEFAULT_URL})")
        sub.add_argument("--api-key", help="API key (env RESTARTER_API_KEY)")
        sub.add_argument("--json", action="store_true", help="print JSON for scripts")
        if name == "restart":
            sub.add_argument("cluster_id")
            sub.add_argument("--force", action="store_true")
            sub.add_argument("--grace-period", type=int, help="minutes (0-30)")
            sub.add_argument("--timeout", type=int, help="minutes (1-60)")
            sub.add_argument("--reason")
            sub.add_argument("--preserve-state", action="store_true")
            sub.add_argument("--request", help="JSON file with the full request body")
            sub.add_argument("--wait", action="store_true", help="show progress until the restart ends")
        elif name == "fault":
            sub.add_argument(
                "kind",
                choices=[
                    "never_healthy",
                    "never_comes_back",
                    "close_port",
                    "fail_command",
                    "xid",
                    "throttle",
                    "agent_offline",
                ],
            )
            sub.add_argument("--cluster-id")
            sub.add_argument("--instance", type=int, help="index of the instance in the cluster (default 0)")
            sub.add_argument("--port", type=int, help="internal port, for close_port")
            sub.add_argument("--op", help="command op, for fail_command (e.g. start_services)")
            sub.add_argument("--service", help="for throttle: ec2, ssm, ...")
            sub.add_argument("--action", help="for throttle: e.g. RebootInstances")
            sub.add_argument("--times", type=int)
        elif name == "rollout":
            sub.add_argument("action", choices=["start", "status", "resume"])
            sub.add_argument("target", help="start: the rollout spec (JSON file); status, resume: the rollout id")
            sub.add_argument("--wait", action="store_true", help="start, resume: show progress until the rollout ends")
            sub.add_argument("--watch", action="store_true", help="status: show progress until the rollout ends")
            sub.add_argument("--window-start", help="resume: the later window opens then (ISO 8601 UTC, ...Z)")
            sub.add_argument("--window-end", help="resume: the later window ends then (ISO 8601 UTC, ...Z)")
            sub.add_argument(
                "--window-minutes", type=int, help="resume: the later window lasts N minutes (from its start, or now)"
            )
            sub.add_argument("--window-id", help="resume: the later window's id (default resume@<start>)")
        elif name == "schedule":
            sub.add_argument("action", choices=["create", "list", "delete", "fire"])
            sub.add_argument("name", nargs="?")
            sub.add_argument("--expression", help="at(2026-12-01T02:00:00) | rate(7 days) | cron(0 2 ? * SUN *)")
            sub.add_argument("--timezone", default="UTC", help="IANA time zone of the expression")
            sub.add_argument("--flexible-window", type=int, default=0, help="minutes Scheduler may fire late")
            sub.add_argument("--window", type=int, default=240, help="maintenance window of each firing, minutes")
            sub.add_argument("--description")
            sub.add_argument("--rollout", help="JSON file: the rollout targets and request (no window)")
            sub.add_argument("--labels", help="targets by labels: key=value[,key=value]")
            sub.add_argument("--cluster-ids", help="targets by id: a,b,c")
            sub.add_argument("--name-pattern", help="targets by name glob, e.g. 'ml-*'")
            sub.add_argument("--request", help="JSON file: the restart request each cluster gets")
            sub.add_argument("--max-concurrency", type=int)
        elif name == "status":
            sub.add_argument("restart_id")
            sub.add_argument("--watch", action="store_true", help="show progress until the restart ends")
        else:
            sub.add_argument("--status")
            sub.add_argument("--label", help="key=value")

    args = parser.parse_args(argv)
    from restarter_cli.client import ApiUnavailableError

    runners = {
        "demo": lambda: run_demo(args.time_scale, args.json),
        "serve": lambda: run_serve(args),
        "invoke": lambda: run_invoke(args),
        "fault": lambda: run_fault(args),
        "restart": lambda: run_restart(args),
        "status": lambda: run_status(args),
        "clusters": lambda: run_clusters(args),
        "rollout": lambda: run_rollout(args),
        "schedule": lambda: run_schedule(args),
    }
    if args.command in ("demo", "serve", "invoke") and not args.time_scale > 0:
        parser.error("--time-scale must be greater than 0")
    try:
        return int(runners[args.command]())
    except ApiUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (OSError, ValueError, TimeoutError) as exc:
        # a file that cannot be read, JSON or a fleet file that does not parse, a bad URL or
        # option value, executions that did not end in time: one line, not a traceback
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"no such file: {exc.filename}"
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
    if isinstance(exc, TimeoutError):
        return f"did not finish in time: {exc}" if str(exc) else "did not finish in time"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


if __name__ == "__main__":
    sys.exit(main())
