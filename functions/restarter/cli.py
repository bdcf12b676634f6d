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
from typing import Any


@dataclass
class DemoCase:
    title: str
    cluster: dict[str, Any]
    request: dict[str, Any]
    expect: str
    faults: list[tuple[str, Any]] = field(default_factory=list)


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
    ),
    DemoCase(
        "forced recovery with a checkpoint",
        {"id": "cluster_err001", "name": "inference-prod", "status": "error", "labels": {"env": "production"}},
        {"force": True, "preserve_state": True, "restart_reason": "Error recovery - forced restart"},
        "ready",
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
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
    os.environ.setdefault("LOG_LEVEL", "ERROR")
    logging.getLogger().setLevel(logging.ERROR)
    # moto's interpreter logs every failed execution at ERROR; the demo reports outcomes itself.
    logging.getLogger("moto").setLevel(logging.CRITICAL)
    from restarter.observability import logger

    logger.setLevel("ERROR")


def _bar(percentage: int, width: int = 24) -> str:
    filled = round(width * percentage / 100)
    return "#" * filled + "-" * (width - filled)


def run_demo(time_scale: float, as_json: bool) -> int:
    _quiet_logs()
    from restarter.domain.errors import RestarterError
    from restarter.domain.models import PortMapping
    from restarter.local.engine import LocalAws
    from restarter.local.fleet import ClusterSpec, seed_cluster
    from restarter.services.restart_intake import accept_restart

    results: list[dict[str, Any]] = []
    with LocalAws(time_scale=time_scale) as aws:
        assert aws.deps is not None
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
                record = accept_restart(aws.deps, cluster.id, case.request, trigger="cli", requested_by="demo")
            except RestarterError as exc:
                results.append({"cluster_id": cluster.id, "expected": case.expect, "status": exc.code})
                continue
            last = None
            while True:
                stored = aws.deps.restarts.get(record.id)
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
            aws.wait_for_execution(record.execution_arn or "")
            results.append(
                {
                    "cluster_id": cluster.id,
                    "restart_id": current.id,
                    "expected": case.expect,
                    "status": current.status,
                    "downtime_seconds": current.downtime_seconds,
                    "restart_duration_seconds": current.restart_duration_seconds,
                    "applied": current.configuration_updates.applied,
                    "error": current.error.message if current.error else None,
                }
            )
    ok = all(r["status"] == r["expected"] for r in results)
    if as_json:
        print(json.dumps({"ok": ok, "results": results}, indent=2))
    else:
        print("\ncluster          expected     got          downtime  duration  (simulated seconds)")
        for r in results:
            mark = "ok " if r["status"] == r["expected"] else "BAD"
            print(
                f"{mark} {r['cluster_id']:<14} {r['expected']:<12} {r['status']:<12} "
                f"{r.get('downtime_seconds') or 0:>8}  {r.get('restart_duration_seconds') or 0:>8}"
            )
        print("\nall restarts ended as expected" if ok else "\nSOME RESTARTS DID NOT END AS EXPECTED")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="restarter", description=__doc__.splitlines()[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run restarts of each kind on the embedded AWS")
    demo.add_argument("--time-scale", type=float, default=300.0, help="simulated seconds per real second")
    demo.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return run_demo(args.time_scale, args.json)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
