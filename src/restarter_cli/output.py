"""What the CLI prints: exit codes, progress bars, tables, JSON, one-line errors.

Every command's answer goes to stdout; errors, logs and anything else go to stderr, so that
`--json` output can be piped into another program.
"""

from __future__ import annotations

import json
import sys
from typing import Any

EXIT_OK, EXIT_RESTART_FAILED, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2, 3
EXIT_USAGE = 2  # bad input (a file, an option): like argparse's own usage errors
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT

TERMINAL = {"ready", "failed", "timed_out", "cancelled", "rolled_back"}


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def print_error(answer: Any) -> None:
    """An API error answer on stderr: status, code, message, then its details."""
    error = answer.error
    print(f"error {answer.status} {error.get('code')}: {error.get('message')}", file=sys.stderr)
    details = error.get("details")
    if details:
        print(json.dumps(details, indent=2), file=sys.stderr)


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def one_line(exc: BaseException) -> str:
    """An exception as one short line, not a traceback."""
    if isinstance(exc, FileNotFoundError):
        return f"no such file: {exc.filename}" if exc.filename else str(exc)
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
    if isinstance(exc, TimeoutError):
        return f"did not finish in time: {exc}" if str(exc) else "did not finish in time"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


def bar(percentage: int, width: int = 24) -> str:
    filled = round(width * percentage / 100)
    return "#" * filled + "-" * (width - filled)


# ------------------------------------------------------------------ restarts


def progress_line(progress: dict[str, Any], status: str) -> str:
    percentage = int(progress["percentage"])
    return f"[{bar(percentage)}] {percentage:3d}%  {progress['phase']:<24} {status}"


def restart_summary(data: dict[str, Any]) -> None:
    print(f"restart {data['id']} of {data['cluster_id']}: {data['status']}")
    if data.get("downtime_seconds") is not None:
        print(f"  downtime {data['downtime_seconds']}s, duration {data['restart_duration_seconds']}s")
    for change in data.get("configuration_changes") or []:
        print(f"  applied {change}")
    if data.get("error"):
        print(f"  error in {data['error'].get('phase')}: {data['error'].get('message')}")
    for note in data.get("rollback_notes") or []:
        print(f"  note: {note}")


def clusters_table(clusters: list[dict[str, Any]]) -> None:
    print(f"{'cluster':<18} {'name':<22} {'status':<11} {'type':<16} {'n':>3} {'$/h':>9}")
    for c in clusters:
        rate = f"{c['hourly_rate']:.2f}" if c.get("hourly_rate") is not None else "-"
        shape = f"{c['instance_type']:<16} {c['instance_count']:>3}"
        print(f"{c['id']:<18} {c['name']:<22} {c['status']:<11} {shape} {rate:>9}")


# ------------------------------------------------------------------ rollouts and schedules


def rollout_line(data: dict[str, Any]) -> str:
    finished = sum(1 for r in data["results"] if r["status"] not in ("pending", "running"))
    total = data["total_clusters"]
    percentage = round(100 * finished / total) if total else 100
    return (
        f"[{bar(percentage)}] {finished}/{total} done  {data['successful_updates']} ok"
        f"  {data['failed']} failed  {data['skipped']} skipped  {data['status']}"
    )


def rollout_report(data: dict[str, Any]) -> None:
    print(f"rollout {data['rollout_id']} ({data['maintenance_window']}): {data['status']}")
    for r in data["results"]:
        detail = f"downtime {r['downtime_seconds']}s" if r.get("downtime_seconds") is not None else r.get("error") or ""
        print(f"  {r['cluster_id']:<20} {r['name']:<22} {r['status']:<22} {detail}")


def schedules_table(schedules: list[dict[str, Any]]) -> None:
    print(f"{'schedule':<28} {'expression':<26} {'timezone':<16} {'window':>6} {'state':<8}")
    for item in schedules:
        state = "enabled" if item["enabled"] else "disabled"
        print(
            f"{item['name']:<28} {item['schedule_expression']:<26} {item['timezone']:<16} "
            f"{item['window_minutes']:>5}m {state:<8}"
        )
