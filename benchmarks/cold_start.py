"""Cold start and memory of every handler, against a bare boto3 client, each in a fresh process.

Budgets (DESIGN.md): cold start <= 1.3x a bare `import boto3; boto3.client("ec2")` measured in
the same run; peak memory <= 150 MB. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/cold_start.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

BASELINE = "import boto3; boto3.client('ec2', region_name='us-east-1')"
# each function's module and the wiring set its first invocation builds (restarter/wiring.py)
HANDLERS = {
    "StartRestartFunction": ("restarter.handlers.start_restart", "get_dependencies"),
    "RestartStepFunction": ("restarter.handlers.restart_step", "get_dependencies"),
    "ApiFunction": ("restarter.handlers.api.app", "get_dependencies"),
    "ApiKeyAuthorizerFunction": ("restarter.handlers.authorizer", "get_api_key_store"),
    "QueueRestartFunction": ("restarter.handlers.queue", "get_queue_dependencies"),
    "AlarmRecoveryFunction": ("restarter.handlers.alarm", "get_alarm_recovery"),
    "RolloutStepFunction": ("restarter.handlers.rollout_step", "get_rollout_dependencies"),
}
PROBE = """
import json, os, resource, sys, time
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
start = time.perf_counter()
{code}
elapsed = time.perf_counter() - start
print(json.dumps({{"seconds": elapsed, "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def measure(code: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(code=code)], capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    base = [measure(BASELINE) for _ in range(runs)]
    base_s = statistics.median(r["seconds"] for r in base)
    print(
        f"{'baseline (boto3 + ec2 client)':<34} {base_s * 1000:7.0f} ms  {max(r['max_rss_mb'] for r in base):6.1f} MB"
    )
    for name, (module, wiring) in HANDLERS.items():
        # import the handler and build its own wiring set, as the first invocation would
        code = f"import {module}\nfrom restarter.wiring import {wiring}\n{wiring}()"
        results = [measure(code) for _ in range(runs)]
        seconds = statistics.median(r["seconds"] for r in results)
        rss = max(r["max_rss_mb"] for r in results)
        verdict = "ok" if seconds <= 1.3 * base_s and rss <= 150 else "OVER"
        print(f"{name:<34} {seconds * 1000:7.0f} ms  {rss:6.1f} MB  {seconds / base_s:4.2f}x  {verdict}")


if __name__ == "__main__":
    main()
