"""Runs one rollout over a large simulated fleet on the embedded AWS and prints what it cost:
status and counts, wall time, the peak number of items and restarts in flight at once
(measured, and checked against max_concurrency), Lambda invocations, the rollout execution's
state transitions and peak memory. Exits non-zero unless every cluster succeeded and the
concurrency bound held.

    .venv/bin/python benchmarks/rollout_scale.py [--clusters 200] [--concurrency 20] [--time-scale 600]
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
import threading
import time
import warnings
from collections import Counter
from datetime import UTC, datetime
from typing import Any

os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
logging.getLogger("moto").setLevel(logging.CRITICAL)
warnings.filterwarnings("ignore", message="No application metrics to publish")

from restarter.domain.rollouts import RolloutSpec  # noqa: E402
from restarter.observability import logger, metrics  # noqa: E402
from restarter.services.rollouts import create_rollout  # noqa: E402
from restarter.wiring import build_rollout_dependencies, use_rollout_dependencies  # noqa: E402
from restarter_local.engine import LocalAws  # noqa: E402
from restarter_local.fleet import ClusterSpec, seed_cluster  # noqa: E402
from restarter_local.lambdas import FunctionRegistry  # noqa: E402

ROLLOUT_ID = "rol_bench_scale"
ITEM_ENDS = ("finish_item", "fail_item")


class TimedRegistry(FunctionRegistry):
    """The engine's registry, also tracking (in real time) which rollout items are in flight:
    from a start_item that returned `running` to the first finish_item / fail_item of that
    cluster. Retried calls of the same step are counted once."""

    def __init__(self, specs: Any) -> None:
        super().__init__(specs)
        self._track = threading.Lock()
        self.in_flight: set[str] = set()
        self.done: set[str] = set()
        self.peak_items = 0
        self.step_actions: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.busy: dict[str, float] = {}  # real seconds inside each kind of step

    def invoke(self, function_name: str, event: Any) -> tuple[Any, bool]:
        began = time.perf_counter()
        result, errored = super().invoke(function_name, event)
        spent = time.perf_counter() - began
        # Metrics are disabled locally, so nothing flushes the shared set and Powertools prints
        # it as EMF every 100 values; a Lambda container would have flushed it per invocation.
        metrics.clear_metrics()
        if isinstance(event, dict) and event.get("action"):
            action, cluster_id = str(event["action"]), str(event.get("cluster_id"))
            with self._track:
                self.step_actions[action] += 1
                self.busy[action] = self.busy.get(action, 0.0) + spent
                if errored:
                    self.errors[f"{action}:{result.get('errorType')}"] += 1
                if action == "start_item" and not errored and result.get("status") == "running":
                    if cluster_id not in self.done:
                        self.in_flight.add(cluster_id)
                        self.peak_items = max(self.peak_items, len(self.in_flight))
                elif action in ITEM_ENDS:
                    self.in_flight.discard(cluster_id)
                    self.done.add(cluster_id)
        return result, errored


def peak_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    """The most intervals open at one instant (an end and a start at the same instant do not overlap)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def state_machine_arn(aws: LocalAws, logical_id: str) -> str:
    machines = aws.client("stepfunctions").list_state_machines()["stateMachines"]
    return next(str(m["stateMachineArn"]) for m in machines if m["name"] == f"restarter-local-{logical_id}")


def all_executions(aws: LocalAws, machine_arn: str) -> list[dict[str, Any]]:
    sfn = aws.client("stepfunctions")
    executions: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"stateMachineArn": machine_arn, "maxResults": 1000}
    while True:
        page = sfn.list_executions(**kwargs)
        executions += page["executions"]
        if not page.get("nextToken"):
            return executions
        kwargs["nextToken"] = page["nextToken"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clusters", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--time-scale", type=float, default=600)
    parser.add_argument("--by", choices=("labels", "name"), default="labels", help="how the rollout selects")
    parser.add_argument("--production-every", type=int, default=10, help="every Nth cluster is env=production")
    parser.add_argument("--timeout", type=float, default=1800, help="real seconds to wait for the rollout")
    args = parser.parse_args(argv)

    logger.setLevel("ERROR")
    aws = LocalAws(time_scale=args.time_scale)
    registry = TimedRegistry(aws.registry.specs)
    aws.registry = registry  # before start(): the engine dispatches Lambda calls to this one
    with aws:
        assert aws.deps is not None
        rd = build_rollout_dependencies(
            aws.deps,
            table=aws.environment["ROLLOUTS_TABLE"],
            state_machine_arn=aws.environment.get("ROLLOUT_STATE_MACHINE_ARN")
            or state_machine_arn(aws, "RolloutStateMachine"),
        )
        use_rollout_dependencies(rd)
        try:
            started = time.perf_counter()
            for i in range(args.clusters):
                production = args.production_every > 0 and i % args.production_every == 0
                labels = {"fleet": "bench", "env": "production" if production else "dev"}
                seed_cluster(aws, ClusterSpec(id=f"cluster_{i:04d}", name=f"bench-{i:04d}", labels=labels))
            seed_cluster(aws, ClusterSpec(id="cluster_outsider", name="outsider", labels={"fleet": "other"}))
            seeded = time.perf_counter() - started

            selector: dict[str, Any] = (
                {"labels": {"fleet": "bench"}} if args.by == "labels" else {"name_pattern": "bench-*"}
            )
            spec = RolloutSpec.model_validate(
                {"maintenance_window": {"id": "mw-bench"}, "max_concurrency": args.concurrency, **selector}
            )
            before = len(registry.invocations)
            simulated_before = aws.clock.now()
            started = time.perf_counter()
            record, _ = create_rollout(rd, spec, rollout_id=ROLLOUT_ID, requested_by="bench", trigger="cli")
            try:
                execution = aws.wait_for_execution(record.execution_arn or "", timeout=args.timeout)
            except TimeoutError:
                execution = {"status": f"still RUNNING after {args.timeout:g} s"}
            wall = time.perf_counter() - started
            simulated = (aws.clock.now() - simulated_before).total_seconds()
            # the restarts underneath end their last states (cleanup may outlive the item)
            aws.wait_for_executions(timeout=120, raise_on_timeout=False)
            invocations = registry.invocations[before:]

            stored = rd.store.get(ROLLOUT_ID)
            assert stored is not None
            final = stored[0]
            counts = Counter(r.status for r in final.results)
            total, succeeded, failed = len(final.results), counts["succeeded"], counts["failed"]
            skipped = counts["skipped"] + counts["skipped_window_closed"]

            restarts = all_executions(aws, aws.environment["STATE_MACHINE_ARN"])
            now = datetime.now(UTC)  # a restart still running counts up to now
            spans = [(e["startDate"], e.get("stopDate") or now) for e in restarts]
            peak_restarts = peak_overlap(spans)
            restart_status = Counter(str(e["status"]) for e in restarts)
            tracked = {r.restart_id for r in final.results if r.restart_id}
            untracked = sorted(str(e["name"]) for e in restarts if e["name"] not in tracked)

            fetched = time.perf_counter()
            history = aws.execution_history(record.execution_arn or "")
            history_seconds = time.perf_counter() - fetched
            entered = [e for e in history if e["type"].endswith("StateEntered")]
            kinds = Counter(e["type"].removesuffix("StateEntered") for e in entered)
            by_function = Counter(name for name, _ in invocations)
            restart_wall = [(stop - start).total_seconds() for start, stop in spans]
            peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        finally:
            use_rollout_dependencies(None)

    bound_held = registry.peak_items <= args.concurrency and peak_restarts <= args.concurrency
    complete = (
        execution["status"] == "SUCCEEDED"
        and final.status == "completed"
        and total == args.clusters
        and succeeded == total
    )
    mean_restart = sum(restart_wall) / len(restart_wall) if restart_wall else 0.0
    ranked = sorted(registry.busy.items(), key=lambda kv: -kv[1])
    print(f"clusters              {args.clusters} (+1 not selected), selected by {args.by}, seeded in {seeded:.1f} s")
    print(f"status                execution {execution['status']}, rollout {final.status}")
    print(f"items                 total {total}  succeeded {succeeded}  failed {failed}  skipped {skipped}")
    print(f"wall time             {wall:.1f} s at time scale {args.time_scale:g} (start to execution end)")
    print(f"simulated clock       +{simulated:.0f} s meanwhile ({simulated / wall:.0f}x real)")
    print(f"peak items in flight  {registry.peak_items}  (start_item running .. finish_item, real time)")
    print(f"peak restarts running {peak_restarts}  (restart executions' start/stop dates)")
    print(f"concurrency bound     {'held' if bound_held else 'EXCEEDED'} (max_concurrency {args.concurrency})")
    print(
        f"restart executions    {len(restarts)} {dict(restart_status)}, mean {mean_restart:.1f} s real each,"
        f" {len(untracked)} not tracked by any item {untracked[:3] if untracked else ''}"
    )
    print(f"lambda invocations    {len(invocations)} {dict(by_function)}")
    print(f"step actions          {dict(registry.step_actions)}")
    print(f"step errors           {dict(registry.errors) or 'none'}")
    print(
        "seconds in handlers   "
        + ", ".join(f"{action} {seconds:.0f}" for action, seconds in ranked)
        + "  (real, summed over threads)"
    )
    print(
        f"state transitions     {len(entered)} in the rollout execution {dict(kinds)}"
        f" (history read in {history_seconds:.1f} s)"
    )
    print(f"peak memory (maxrss)  {peak_rss_mb:.0f} MiB")
    if not complete:
        print("FAILED: the rollout did not complete with every cluster succeeded")
        reasons: dict[str, list[str]] = {}
        for item in final.results:
            if item.status != "succeeded":
                reasons.setdefault(f"{item.status}: {item.error}", []).append(item.cluster_id)
        for reason, clusters in sorted(reasons.items(), key=lambda kv: -len(kv[1])):
            more = f" +{len(clusters) - 3} more" if len(clusters) > 3 else ""
            print(f"  {len(clusters):4d} x {reason}  ({', '.join(clusters[:3])}{more})")
    if not bound_held:
        print("FAILED: more items or restarts ran at once than max_concurrency")
    return 0 if complete and bound_held else 1


if __name__ == "__main__":
    sys.exit(main())
