"""`restarter doctor [--cluster-id ID]`: what a first restart needs from the account, checked
through `GET /v1/diagnostics` of a deployed stage (or `restarter serve`)."""

from __future__ import annotations

import argparse

from restarter_cli.client import RestarterClient
from restarter_cli.output import EXIT_OK, EXIT_REFUSED, print_error, print_json

EXIT_SOMETHING_MISSING = 4
MARKS = {"ok": "ok  ", "missing": "MISS", "warning": "warn", "unknown": "??  "}


def run_doctor(args: argparse.Namespace) -> int:
    client = RestarterClient(args.url, args.api_key)
    answer = client.request("GET", "/diagnostics", query={"cluster_id": args.cluster_id} if args.cluster_id else None)
    if not answer.ok:
        print_error(answer)
        return EXIT_REFUSED
    data = answer.body["data"]
    if args.json:
        print_json(data)
    else:
        for check in data["checks"]:
            print(f"{MARKS.get(check['status'], check['status'])}  {check['name']}: {check['detail']}")
        summary = data["summary"]
        print(", ".join(f"{count} {status}" for status, count in summary.items()))
    return EXIT_SOMETHING_MISSING if data["summary"].get("missing") else EXIT_OK
