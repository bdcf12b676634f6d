"""The commands that talk to the Restart Cluster API (`restarter serve` or a deployed stage):
restart, status, clusters, rollout, schedule."""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from restarter_cli.client import ApiAnswer, RestarterClient
from restarter_cli.output import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_RESTART_FAILED,
    TERMINAL,
    clusters_table,
    fail,
    print_error,
    print_json,
    progress_line,
    restart_summary,
    rollout_line,
    rollout_report,
    schedules_table,
)


def client_for(args: argparse.Namespace) -> RestarterClient:
    return RestarterClient(args.url, args.api_key)


# ------------------------------------------------------------------ restarts


def follow_restart(client: RestarterClient, restart_id: str, as_json: bool, poll: float = 0.5) -> int:
    """Show a progress bar until the restart ends; the exit code says how it ended."""
    last = None
    while True:
        answer = client.restart_status(restart_id)
        if not answer.ok:
            print_error(answer)
            return EXIT_REFUSED
        data = answer.body["data"]
        progress = data["restart_progress"]
        line = (progress["phase"], progress["percentage"], data["status"])
        if line != last and not as_json:
            print(progress_line(progress, data["status"]))
            last = line
        if data["status"] in TERMINAL:
            if as_json:
                print_json(data)
            else:
                restart_summary(data)
            return EXIT_OK if data["status"] == "ready" else EXIT_RESTART_FAILED
        time.sleep(poll)


def restart_body(args: argparse.Namespace) -> dict[str, Any]:
    """`--request FILE`, then the flags on top of it."""
    body: dict[str, Any] = json.loads(Path(args.request).read_text()) if args.request else {}
    for flag in ("force", "preserve_state"):
        if getattr(args, flag):
            body[flag] = True
    for flag, field_name in (
        ("grace_period", "grace_period_minutes"),
        ("timeout", "timeout_minutes"),
        ("reason", "restart_reason"),
    ):
        if getattr(args, flag) is not None:
            body[field_name] = getattr(args, flag)
    return body


def run_restart(args: argparse.Namespace) -> int:
    client = client_for(args)
    answer = client.restart(args.cluster_id, restart_body(args))
    if not answer.ok:
        if args.json:
            print_json(answer.body)
        print_error(answer)
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
        return follow_restart(client, data["restart_id"], args.json)
    if args.json:
        print_json(answer.body)
    return EXIT_OK


def run_status(args: argparse.Namespace) -> int:
    client = client_for(args)
    if args.watch:
        return follow_restart(client, args.restart_id, args.json)
    answer = client.restart_status(args.restart_id)
    if not answer.ok:
        print_error(answer)
        return EXIT_REFUSED
    data = answer.body["data"]
    if args.json:
        print_json(data)
    else:
        print(progress_line(data["restart_progress"], data["status"]))
        restart_summary(data)
    return EXIT_OK


def run_clusters(args: argparse.Namespace) -> int:
    answer = client_for(args).clusters(args.status, args.label)
    if not answer.ok:
        print_error(answer)
        return EXIT_REFUSED
    if args.json:
        print_json(answer.body["data"])
    else:
        clusters_table(answer.body["data"])
    return EXIT_OK


# ------------------------------------------------------------------ rollouts


def follow_rollout(client: RestarterClient, rollout_id: str, as_json: bool, poll: float = 0.5) -> int:
    last = None
    while True:
        answer = client.rollout(rollout_id)
        if not answer.ok:
            print_error(answer)
            return EXIT_REFUSED
        data = answer.body["data"]
        line = rollout_line(data)
        if line != last and not as_json:
            print(line)
            last = line
        if data["status"] == "completed":
            if as_json:
                print_json(data)
            else:
                rollout_report(data)
            return EXIT_OK if data["successful_updates"] == data["total_clusters"] else EXIT_RESTART_FAILED
        time.sleep(poll)


def resume_body(args: argparse.Namespace) -> dict[str, Any] | None:
    """`rollout resume`: a later maintenance window from the flags, or none (the rollout's own).
    `--window-minutes` alone sends a duration, so the API's clock decides when the window ends."""
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
    client = client_for(args)
    if args.action == "status":
        if args.watch:
            return follow_rollout(client, args.target, args.json)
        answer = client.rollout(args.target)
    elif args.action == "resume":
        answer = client.request("POST", f"/rollouts/{args.target}/resume", resume_body(args))
    else:
        answer = client.start_rollout(json.loads(Path(args.target).read_text()))
    if not answer.ok:
        print_error(answer)
        return EXIT_REFUSED
    data = answer.body["data"]
    if args.action in ("start", "resume") and args.wait:
        if not args.json:
            verb = "started" if args.action == "start" else f"resumed (attempt {data['attempt']})"
            print(f"rollout {data['rollout_id']} {verb} over {data['total_clusters']} clusters")
        return follow_rollout(client, data["rollout_id"], args.json)
    if args.json:
        print_json(data)
    else:
        print(rollout_line(data))
        rollout_report(data)
    return EXIT_OK


# ------------------------------------------------------------------ schedules


def rollout_targets(args: argparse.Namespace) -> dict[str, Any]:
    """`--rollout FILE` (a whole spec), else the target flags and `--request FILE`."""
    if getattr(args, "rollout", None):
        return dict(json.loads(Path(args.rollout).read_text()))
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


def fire_locally(client: RestarterClient, name: str) -> ApiAnswer:
    """`POST /local/schedules/{name}/fire` on a `restarter serve` (moto never fires schedules)."""
    return local_request(client, "POST", f"/local/schedules/{name}/fire")


def local_request(client: RestarterClient, method: str, path: str, body: Any = None) -> ApiAnswer:
    """A request to `restarter serve`'s local-only endpoints, beside `/v1`."""
    base = client.url
    client.url = base.removesuffix("/v1")
    try:
        return client.request(method, path, body)
    finally:
        client.url = base


def run_schedule(args: argparse.Namespace) -> int:
    client = client_for(args)
    if args.action == "create":
        if not args.name or not args.expression:
            fail("schedule create needs NAME and --expression")
            return EXIT_REFUSED
        body: dict[str, Any] = {
            "name": args.name,
            "schedule_expression": args.expression,
            "timezone": args.timezone,
            "flexible_window_minutes": args.flexible_window,
            "window_minutes": args.window,
            "rollout": rollout_targets(args),
        }
        if args.description:
            body["description"] = args.description
        answer = client.create_schedule(body)
    elif args.action in ("delete", "fire"):
        if not args.name:
            fail(f"schedule {args.action} needs NAME")
            return EXIT_REFUSED
        answer = client.delete_schedule(args.name) if args.action == "delete" else fire_locally(client, args.name)
    else:
        answer = client.schedules()
    if not answer.ok:
        print_error(answer)
        return EXIT_REFUSED
    data = answer.body["data"]
    if args.json:
        print_json(answer.body)
    elif args.action == "list":
        schedules_table(data)
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
