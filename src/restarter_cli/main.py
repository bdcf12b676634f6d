"""The `restarter` command: argument parsing and dispatch.

The commands live by job: `remote` (the API client: restart, status, clusters, rollout,
schedule), `local` (invoke, serve, fault), `demo`, and `output` (what all of them print).
"""

from __future__ import annotations

import argparse
import sys

from restarter_cli.client import DEFAULT_URL
from restarter_cli.output import EXIT_INTERRUPTED, EXIT_UNREACHABLE, EXIT_USAGE, one_line
from restarter_local.fault_kinds import FAULT_KINDS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="restarter", description="Restart GPU clusters safely.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run restarts of each kind on the embedded AWS")
    demo.add_argument("--time-scale", type=float, default=300.0, help="simulated seconds per real second")
    demo.add_argument("--json", action="store_true", help="print the results as JSON")
    demo.add_argument(
        "--deadline", type=float, default=600.0, help="real seconds the whole demo may take (exit 1 past it)"
    )

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
    invoke.add_argument(
        "--now",
        help="the simulated time the embedded AWS starts at (ISO 8601 UTC, ...Z, or `now`); "
        "default: a schedule firing's scheduled_time, else now",
    )

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
        ("health", "a cluster's GPU health: the last report of every instance (--check: run one now)"),
        ("doctor", "what a first restart needs from the account (tables, rules, tags, SSM, IAM)"),
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
                choices=FAULT_KINDS,
            )
            sub.add_argument("--cluster-id")
            sub.add_argument("--instance", type=int, help="index of the instance in the cluster (default 0)")
            sub.add_argument("--port", type=int, help="internal port, for close_port")
            sub.add_argument("--op", help="command op, for fail_command (e.g. start_services)")
            sub.add_argument("--service", help="for throttle: ec2, ssm, ...")
            sub.add_argument("--action", help="for throttle: e.g. RebootInstances")
            sub.add_argument("--times", type=int)
            sub.add_argument("--gpu", type=int, help="GPU faults: index of the GPU on the instance (default 0)")
            sub.add_argument("--xid", type=int, help="xid: the Xid number, e.g. 79 (without it: a kernel line only)")
            sub.add_argument(
                "--late-seconds", type=float, help="gpu_missing: the GPU appears this many seconds after each boot"
            )
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
        elif name == "doctor":
            sub.add_argument("--cluster-id", help="also check this cluster's instances")
        elif name == "health":
            sub.add_argument("cluster_id")
            sub.add_argument("--check", action="store_true", help="run a health check now and show its reports")
            sub.add_argument("--wait-seconds", type=float, default=120.0, help="--check: how long to wait for it")
        elif name == "status":
            sub.add_argument("restart_id")
            sub.add_argument("--watch", action="store_true", help="show progress until the restart ends")
        else:
            sub.add_argument("--status")
            sub.add_argument("--label", help="key=value")

    args = parser.parse_args(argv)
    if args.command in ("demo", "serve", "invoke") and not args.time_scale > 0:
        parser.error("--time-scale must be greater than 0")
    if args.command == "demo" and not args.deadline > 0:
        parser.error("--deadline must be greater than 0")
    from restarter_cli.client import ApiUnavailableError

    try:
        return int(_dispatch(args))
    except ApiUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (OSError, ValueError, TimeoutError) as exc:
        # a file that cannot be read, JSON or a fleet file that does not parse, a bad URL or
        # option value, executions that did not end in time: one line, not a traceback
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE


def _dispatch(args: argparse.Namespace) -> int:
    """Each command imports only its own module: `restarter clusters` never loads moto."""
    if args.command == "demo":
        from restarter_cli.demo import run_demo

        return run_demo(args.time_scale, args.json, args.deadline)
    if args.command in ("serve", "invoke", "fault"):
        from restarter_cli import local

        return {"serve": local.run_serve, "invoke": local.run_invoke, "fault": local.run_fault}[args.command](args)
    if args.command == "health":
        from restarter_cli.health import run_health

        return run_health(args)
    if args.command == "doctor":
        from restarter_cli.doctor import run_doctor

        return run_doctor(args)
    from restarter_cli import remote

    runners = {
        "restart": remote.run_restart,
        "status": remote.run_status,
        "clusters": remote.run_clusters,
        "rollout": remote.run_rollout,
        "schedule": remote.run_schedule,
    }
    return runners[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
