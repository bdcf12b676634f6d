"""The commands that run the system locally: `invoke` (one event to one function on the
embedded AWS, like `sam local invoke`), `serve` (the REST API on loopback) and `fault`
(inject a failure into a running `serve`)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from restarter_cli.output import EXIT_OK, EXIT_REFUSED, EXIT_RESTART_FAILED, fail, print_error, print_json

DEV_KEY = "rk_0123abcd_LocalDevOnly-NotASecret_0123456789abcdefXYZ"


def quiet_logs() -> None:
    """Local runs print their results on stdout: logs go to stderr, errors only."""
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
    os.environ.setdefault("LOG_LEVEL", "ERROR")
    logging.getLogger().setLevel(logging.ERROR)
    # moto's interpreter logs every failed execution at ERROR; the commands report outcomes themselves.
    logging.getLogger("moto").setLevel(logging.CRITICAL)
    from restarter.observability import logger

    logger.setLevel("ERROR")
    for handler in logging.getLogger(logger.name).handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(CurrentStderr())


class CurrentStderr:
    """Whatever `sys.stderr` is at the time of writing (it may be replaced after setup)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def parse_now(value: str | None) -> datetime | None:
    """`--now`: ISO 8601 UTC (`...Z`), or `now` for the real time."""
    if value is None:
        return None
    if value == "now":
        return datetime.now(UTC)
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"--now {value}: give a time zone (UTC with Z)")
    return moment


def run_invoke(args: argparse.Namespace) -> int:
    """Like `sam local invoke`, on the embedded AWS: one event to one function, executions to
    the end. What the event names (a restart, a rollout) is made first, so that every sample in
    events/ gets a real answer; a schedule firing runs at its scheduled time unless `--now`."""
    quiet_logs()
    from restarter_cli.samples import prepare_sample, sample_start_time
    from restarter_local.engine import LocalAws
    from restarter_local.fleet_file import default_fleet_path, load_fleet, seed_fleet

    try:
        event = json.loads(Path(args.event).read_text())
    except (OSError, ValueError) as exc:
        fail(f"cannot read event {args.event}: {exc}")
        return EXIT_REFUSED
    start_time = parse_now(args.now) or sample_start_time(event)
    with LocalAws(time_scale=args.time_scale, start_time=start_time) as aws:
        if args.function not in aws.registry.specs:
            names = ", ".join(sorted(aws.registry.specs))
            fail(f"unknown function {args.function} (template.yaml has: {names})")
            return EXIT_REFUSED
        assert aws.deps is not None
        seed_fleet(aws, load_fleet(Path(args.fleet) if args.fleet else default_fleet_path()))
        aws.api_keys.put_known_key(DEV_KEY, "default", ["read", "restart"], name="local-dev")
        seeded = prepare_sample(aws, args.function, event)
        result, errored = aws.registry.invoke(args.function, seeded.event)
        for step in seeded.after_invoke:
            step()
        aws.wait_for_rollouts(timeout=args.wait_timeout)
        restart_ids = [e["name"] for e in aws.executions()] + seeded.restart_ids
        restarts = []
        for restart_id in dict.fromkeys(restart_ids):
            stored = aws.deps.restarts.get(restart_id)
            if stored:
                restarts.append(stored[0].model_dump(mode="json", exclude={"phase_state"}))
        rollouts = rollout_reports(aws, result, seeded.rollout_ids)
    print_json(
        {"function": args.function, "errored": errored, "result": result, "rollouts": rollouts, "restarts": restarts}
    )
    return EXIT_RESTART_FAILED if errored else EXIT_OK


def rollout_reports(aws: Any, result: Any, seeded: list[str]) -> list[dict[str, Any]]:
    """The seed-shaped report of every rollout the invocation started or the sample named (one
    with no cluster to restart has no execution: the handler's answer names it)."""
    from restarter.domain.rollouts import summarize
    from restarter.wiring import get_rollout_dependencies

    store = get_rollout_dependencies().store
    ids = {e["name"].rsplit("-", 1)[0] for e in aws.rollout_executions()} | set(seeded)
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
    from restarter_cli.remote import client_for, local_request

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
            "gpu": args.gpu,
            "xid": args.xid,
            "late_seconds": args.late_seconds,
        }.items()
        if v is not None
    }
    answer = local_request(client_for(args), "POST", "/local/faults", fault)
    if not answer.ok:
        print_error(answer)
        return EXIT_REFUSED
    if args.json:
        print(json.dumps(answer.body["data"]))
    else:
        print("cleared GPU faults" if args.kind == "clear_gpu" else f"injected {args.kind}")
    return EXIT_OK


def run_serve(args: argparse.Namespace) -> int:
    from restarter_local.serve_command import main_serve

    return int(
        main_serve(args.host, args.port, Path(args.fleet) if args.fleet else None, args.time_scale, args.api_key)
    )
