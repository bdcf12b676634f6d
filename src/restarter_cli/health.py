"""`restarter health CLUSTER [--check]`: a cluster's GPU health, read or checked now."""

from __future__ import annotations

import argparse
import time
from typing import Any

from restarter_cli.client import ApiAnswer, RestarterClient
from restarter_cli.output import EXIT_OK, EXIT_REFUSED, print_error, print_json

EXIT_UNHEALTHY = 3
CHECK_POLL_SECONDS = 0.5


def run_health(args: argparse.Namespace) -> int:
    client = RestarterClient(args.url, args.api_key)
    if args.check:
        started = client.request("POST", f"/clusters/{args.cluster_id}/health-check")
        if not started.ok:
            print_error(started)
            return EXIT_REFUSED
        if not args.json:
            print(f"health check {started.body['data']['check_id']} started on {args.cluster_id}")
        answer = _wait_for_check(client, args.cluster_id, started.body["data"]["check_id"], args.wait_seconds)
    else:
        answer = client.request("GET", f"/clusters/{args.cluster_id}/health")
    if not answer.ok:
        print_error(answer)
        return EXIT_REFUSED
    data = answer.body["data"]
    if args.json:
        print_json(data)
    else:
        print_health(data)
    return EXIT_UNHEALTHY if data["verdict"] == "unhealthy" else EXIT_OK


def _wait_for_check(client: RestarterClient, cluster_id: str, check_id: str, wait_seconds: float) -> ApiAnswer:
    deadline = time.monotonic() + wait_seconds
    while True:
        answer = client.request("GET", f"/clusters/{cluster_id}/health")
        pending = answer.body.get("data", {}).get("pending_check") if answer.ok else None
        if not answer.ok or pending is None or pending.get("check_id") != check_id:
            return answer
        if time.monotonic() > deadline:
            raise TimeoutError(f"health check {check_id} still running after {wait_seconds:g}s")
        time.sleep(CHECK_POLL_SECONDS)


def print_health(data: dict[str, Any]) -> None:
    worst = f" (worst: {data['worst_action']})" if data.get("worst_action") else ""
    print(f"cluster {data['cluster_id']}: {data['verdict']}{worst}, checked {data.get('checked_at') or 'never'}")
    if data.get("pending_check"):
        print(f"  check {data['pending_check']['check_id']} running since {data['pending_check']['started_at']}")
    for node in data.get("instances", []):
        _print_node(node)


def _print_node(node: dict[str, Any]) -> None:
    verdict = {"healthy": "healthy", "unhealthy": "UNHEALTHY"}.get(_verdict(node), "unknown")
    assessment = node.get("assessment")
    origin = f"restart {node['restart_id']}" if node.get("restart_id") else f"check {node.get('check_id')}"
    if assessment is None:
        print(f"  {node['instance_id']}  unknown  health command {node.get('command_status')}  ({origin})")
        return
    print(
        f"  {node['instance_id']}  {verdict}  {assessment['visible_gpus']}/{assessment['expected_gpus']} GPUs  "
        f"driver {assessment.get('driver_version') or '?'}  CUDA {assessment.get('cuda_version') or '?'}  "
        f"DCGM {assessment.get('dcgm')}  ({origin}, {node['taken_at']})"
    )
    for gpu in assessment.get("gpus", []):
        print(
            f"    GPU {gpu.get('index')}  {gpu.get('name') or '?'}  {gpu.get('uuid') or '?'}  "
            f"ECC uncorrected volatile {_n(gpu.get('ecc_volatile_uncorrected'))} "
            f"aggregate {_n(gpu.get('ecc_aggregate_uncorrected'))}  "
            f"row remap pending {_n(gpu.get('remapped_rows_pending'))} failure {_n(gpu.get('remapped_rows_failure'))}"
        )
    for finding in assessment.get("findings", []):
        where = [finding["code"]]
        if finding.get("gpu_index") is not None:
            where.append(f"GPU {finding['gpu_index']}")
        elif finding.get("pci_bus_id"):
            where.append(f"PCI {finding['pci_bus_id']}")  # e.g. a GPU that fell off the bus
        if finding.get("count", 1) > 1:
            where.append(f"x{finding['count']}")
        print(f"    [{finding['action']}] {' '.join(where)}: {finding['summary']}")
        print(f"        evidence: {finding['evidence'].splitlines()[0] if finding.get('evidence') else '-'}")


def _verdict(node: dict[str, Any]) -> str:
    assessment = node.get("assessment")
    if assessment is None:
        return "unknown"
    return "healthy" if assessment.get("ready") else "unhealthy"


def _n(value: Any) -> str:
    return "n/a" if value is None else str(value)
