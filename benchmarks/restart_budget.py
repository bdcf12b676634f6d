"""Prints the cost of one basic graceful restart on the embedded AWS: state transitions,
Lambda invocations, the states it went through, and wall time. Budgets (DESIGN.md): <= 30
transitions, <= 8 invocations; the exit status is 1 when either is exceeded.

    .venv/bin/python benchmarks/restart_budget.py
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import Counter

os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
logging.getLogger("moto").setLevel(logging.CRITICAL)

from restarter.observability import logger  # noqa: E402
from restarter.services.restart_intake import accept_restart  # noqa: E402
from restarter_local.engine import LocalAws  # noqa: E402
from restarter_local.fleet import ClusterSpec, seed_cluster  # noqa: E402

TRANSITION_BUDGET = 30
INVOCATION_BUDGET = 8


def main() -> int:
    logger.setLevel("ERROR")
    with LocalAws(time_scale=600) as aws:
        assert aws.deps is not None
        cluster = seed_cluster(aws, ClusterSpec(id="cluster_bench", name="bench", instance_count=2))
        before = len(aws.registry.invocations)
        started = time.perf_counter()
        record = accept_restart(aws.deps, cluster.id, {}, trigger="cli", requested_by="bench")
        execution = aws.wait_for_execution(record.execution_arn or "")
        wall = time.perf_counter() - started
        history = aws.execution_history(record.execution_arn or "")
        entered = [e for e in history if e["type"].endswith("StateEntered")]
        kinds = Counter(e["type"].removesuffix("StateEntered") for e in entered)
        invocations = len(aws.registry.invocations) - before
        print(f"status                {execution['status']}")
        path = [e["stateEnteredEventDetails"]["name"] for e in entered]
        print(f"state transitions     {len(entered)}  (budget {TRANSITION_BUDGET})  {dict(kinds)}")
        print(f"lambda invocations    {invocations}  (budget {INVOCATION_BUDGET})")
        print(f"states                {' -> '.join(path)}")
        print(f"wall time             {wall:.2f} s at time scale 600")
    within = len(entered) <= TRANSITION_BUDGET and invocations <= INVOCATION_BUDGET
    return 0 if within and execution["status"] == "SUCCEEDED" else 1


if __name__ == "__main__":
    sys.exit(main())
