"""Rollouts: the seed's maintenance-window batch as one execution of `statemachine/rollout.asl.json`,
end to end on the embedded AWS: the real rollout ASL on moto's Step Functions interpreter, the
real RolloutStepFunction handler, real restarts underneath.

The pure rules are in test_rollout_rules.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from restarter.domain.errors import RequestValidationError
from restarter.domain.models import Cluster, format_time
from restarter.domain.rollouts import (
    EVENTS_PER_EXTRA_POLL,
    HISTORY_EVENT_LIMIT,
    ITEM_EVENT_BUDGET,
    ITEM_EVENTS_ONE_POLL,
    MAX_ROLLOUT_TARGETS,
    ROLLOUT_FIXED_EVENTS,
    ItemResult,
    RolloutRecord,
    RolloutSpec,
    summarize,
)
from restarter.services import rollouts as rollout_service
from restarter.services.rollouts import create_rollout, resume_rollout
from restarter.wiring import RolloutDependencies, build_rollout_dependencies, use_rollout_dependencies
from restarter_local.engine import LocalAws, _empty_zip
from restarter_local.template import FunctionSpec
from tests.conftest import REPO
from tests.integration.harness import SEED_RESULT_KEYS, Seed, explain_restarts, restarts_of, spec

# ---------------------------------------------------------------- end to end


def provision_rollouts(aws: LocalAws) -> RolloutDependencies:
    """What template.yaml adds for rollouts, created the way the engine provisions the rest: the
    RolloutsTable, the RolloutStepFunction (dispatched in-process by logical ID) and the rollout
    state machine with its definition substitution. Whatever the engine already made from the
    template is reused."""
    assert aws.deps is not None
    handler = "restarter.handlers.rollout_step.lambda_handler"
    aws.registry.specs.setdefault("RolloutStepFunction", FunctionSpec("RolloutStepFunction", handler))
    role_arn = aws.client("iam").get_role(RoleName="restarter-local")["Role"]["Arn"]
    lam = aws.client("lambda")
    existing = {f["FunctionName"]: f["FunctionArn"] for f in lam.list_functions()["Functions"]}
    function_arn = (
        existing.get("RolloutStepFunction")
        or lam.create_function(
            FunctionName="RolloutStepFunction",
            Runtime="python3.12",
            Role=role_arn,
            Handler=handler,
            Code={"ZipFile": _empty_zip()},
        )["FunctionArn"]
    )
    definition = (REPO / "statemachine" / "rollout.asl.json").read_text()
    definition = definition.replace("${RolloutStepFunctionArn}", function_arn)
    machine_arn = aws.client("stepfunctions").create_state_machine(
        name="restarter-local-rollout-test", definition=definition, roleArn=role_arn
    )["stateMachineArn"]
    table = "restarter-local-RolloutsTable"
    dynamodb = aws.client("dynamodb")
    if table not in dynamodb.list_tables()["TableNames"]:
        dynamodb.create_table(
            TableName=table,
            AttributeDefinitions=[{"AttributeName": "rollout_id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "rollout_id", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
    return build_rollout_dependencies(aws.deps, table=table, state_machine_arn=machine_arn)


@pytest.fixture
def rollouts(aws: LocalAws) -> Iterator[RolloutDependencies]:
    rd = provision_rollouts(aws)
    use_rollout_dependencies(rd)
    yield rd
    use_rollout_dependencies(None)


def run_rollout(
    aws: LocalAws, rd: RolloutDependencies, body: dict[str, Any], rollout_id: str = "rol_mw20240115"
) -> tuple[dict[str, Any], RolloutRecord]:
    if rd.store.get(rollout_id) is None:
        spec = RolloutSpec.model_validate(body)
        record, created = create_rollout(rd, spec, rollout_id=rollout_id, requested_by="tests", trigger="schedule")
        assert created
    else:
        record, resumed = resume_rollout(rd, rollout_id)
        assert resumed
    assert record.execution_arn
    execution = aws.wait_for_execution(record.execution_arn, timeout=120)
    aws.wait_for_executions(timeout=60)  # the restarts underneath
    assert execution["status"] == "SUCCEEDED", execution
    stored = rd.store.get(rollout_id)
    assert stored is not None
    return json.loads(execution["output"]), stored[0]


def seed_fleet(seed: Seed, count: int = 4) -> list[Cluster]:
    names = ["prod-inference", "ml-training", "eval-cluster", "batch-jobs"]
    return [
        seed(
            id=f"cluster_{i:03d}",
            name=names[i % len(names)],
            instance_count=1,
            labels={"team": "ml", "env": "production" if i == 0 else "dev"},
        )
        for i in range(count)
    ]


MAINTENANCE_REQUEST = {"wait_for_ready": True, "timeout_minutes": 20, "apply_system_updates": True}


def test_rollout_restarts_every_target_and_reports_the_seed_shape(
    aws: LocalAws, seed: Seed, rollouts: RolloutDependencies
) -> None:
    fleet = seed_fleet(seed)
    seed(id="cluster_other", name="other", instance_count=1, labels={"team": "research"})

    report, record = run_rollout(
        aws,
        rollouts,
        {
            "maintenance_window": {"id": "mw-2024-01-15"},
            "labels": {"team": "ml"},
            "request": MAINTENANCE_REQUEST,
            "docker_updates": {"cluster_001": "tensorone/pytorch:2.2-cuda12.1"},
            "max_concurrency": 2,
        },
    )

    assert report["maintenance_window"] == "mw-2024-01-15"
    assert (report["total_clusters"], report["successful_updates"], report["failed"], report["skipped"]) == (4, 4, 0, 0)
    assert [r["cluster_id"] for r in report["results"]] == [c.id for c in fleet]
    for line in report["results"]:
        assert set(line) >= SEED_RESULT_KEYS
        assert line["success"] is True and line["error"] is None and line["status"] == "succeeded"
        assert isinstance(line["downtime_seconds"], int) and line["downtime_seconds"] > 0
    by_id = {r["cluster_id"]: r for r in report["results"]}
    assert any("docker_image" in u for u in by_id["cluster_001"]["updates_applied"])
    assert report == summarize(record) and record.status == "completed"
    # a sliding window of at most 2: never more items started than finished + 2
    # (each item counted once, whatever the state machine retried)
    running, peak, seen = 0, 0, set()
    for name, event in aws.registry.invocations:
        if name == "RolloutStepFunction" and event["action"] in ("start_item", "finish_item"):
            key = (event["action"], json.dumps(event.get("item") or event.get("cluster_id"), sort_keys=True))
            if key in seen:
                continue
            seen.add(key)
            running += 1 if event["action"] == "start_item" else -1
            peak = max(peak, running)
    assert 1 <= peak <= 2
    assert restarts_of(aws, "cluster_other") == []

    # the production cluster got the gentler settings, the others the defaults
    prod = restarts_of(aws, "cluster_000")[0]
    assert prod.request["grace_period_minutes"] == 15 and prod.request["preserve_state"] is True
    assert prod.trigger == "schedule" and prod.requested_by == "rollout:rol_mw20240115"
    assert restarts_of(aws, "cluster_002")[0].request["grace_period_minutes"] == 5


def test_failure_threshold_stops_new_items(aws: LocalAws, seed: Seed, rollouts: RolloutDependencies) -> None:
    fleet = seed_fleet(seed, 3)
    aws.agent.close_port(fleet[0].instance_ids[0], 8888)  # its new image never passes health checks

    report, _ = run_rollout(
        aws,
        rollouts,
        {
            "maintenance_window": {"id": "mw-1"},
            "cluster_ids": [c.id for c in fleet],
            "docker_updates": {fleet[0].id: "tensorone/pytorch:2.2-cuda12.1"},
            "max_concurrency": 1,
            "failure_threshold": {"count": 1},
        },
    )

    statuses = [(r["cluster_id"], r["status"], r["success"]) for r in report["results"]]
    assert statuses == [
        ("cluster_000", "failed", False),
        ("cluster_001", "skipped", False),
        ("cluster_002", "skipped", False),
    ]
    assert report["results"][0]["error"]
    assert (report["successful_updates"], report["failed"], report["skipped"]) == (0, 1, 2)
    assert restarts_of(aws, "cluster_001") == [] and restarts_of(aws, "cluster_002") == []


def test_closed_window_starts_nothing(aws: LocalAws, seed: Seed, rollouts: RolloutDependencies) -> None:
    fleet = seed_fleet(seed, 2)
    ended = aws.clock.now() - timedelta(minutes=1)

    report, _ = run_rollout(
        aws,
        rollouts,
        {"maintenance_window": {"id": "mw-late", "end": ended.isoformat()}, "cluster_ids": [c.id for c in fleet]},
    )

    assert [r["status"] for r in report["results"]] == ["skipped_window_closed"] * 2
    assert report["successful_updates"] == 0
    assert all(restarts_of(aws, c.id) == [] for c in fleet)


def test_resume_does_not_redo_succeeded_clusters(aws: LocalAws, seed: Seed, rollouts: RolloutDependencies) -> None:
    fleet = seed_fleet(seed, 3)
    aws.agent.close_port(fleet[1].instance_ids[0], 8888)
    body = {
        "maintenance_window": {"id": "mw-resume"},
        "cluster_ids": [c.id for c in fleet],
        "docker_updates": {fleet[1].id: "tensorone/pytorch:2.2-cuda12.1"},
        "max_concurrency": 3,
    }
    first, _ = run_rollout(aws, rollouts, body)
    assert [r["success"] for r in first["results"]] == [True, False, True], explain_restarts(aws, first)

    aws.agent.open_port(fleet[1].instance_ids[0], 8888)
    second, record = run_rollout(aws, rollouts, body)

    assert [r["success"] for r in second["results"]] == [True, True, True], explain_restarts(aws, second)
    assert record.attempt == 2
    # the clusters that had succeeded were not restarted again and keep their first result
    assert [len(restarts_of(aws, c.id)) for c in fleet] == [1, 2, 1]
    assert second["results"][0] == first["results"][0] and second["results"][2] == first["results"][2]


def test_an_item_whose_step_fails_becomes_a_failed_result(
    aws: LocalAws, seed: Seed, rollouts: RolloutDependencies, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = seed_fleet(seed, 2)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("intake exploded")

    monkeypatch.setattr("restarter.services.rollouts.accept_restart", broken)

    report, record = run_rollout(
        aws, rollouts, {"maintenance_window": {"id": "mw-x"}, "cluster_ids": [c.id for c in fleet]}
    )

    # the state machine caught the Lambda error (no retry for it) and recorded a failed result
    assert [(r["status"], r["error"]) for r in report["results"]] == [("failed", "RuntimeError: intake exploded")] * 2
    assert record.status == "completed"


def test_a_retried_start_item_follows_the_restart_an_earlier_try_started(
    aws: LocalAws, seed: Seed, rollouts: RolloutDependencies
) -> None:
    """Given a start_item that started the restart but lost the write recording it (a race on
    the rollout record, a timeout), when the state machine retries it, then it follows that
    restart instead of starting a second one (which the cluster lock would refuse: a failed
    item while the first restart runs on, untracked)."""
    [cluster] = seed_fleet(seed, 1)
    spec = RolloutSpec.model_validate({"maintenance_window": {"id": "mw-retry"}, "cluster_ids": [cluster.id]})
    record = RolloutRecord(
        rollout_id="rol_retry",
        spec=spec,
        requested_by="tests",
        created_at="2024-01-15T02:00:00Z",
        results=[ItemResult(cluster_id=cluster.id, name=cluster.name)],
    )
    rollouts.store.put(record, None)
    first = rollout_service.start_item(rollouts, "rol_retry", cluster.id)

    def lose_the_restart_id(current: RolloutRecord) -> None:
        current.result(cluster.id).restart_id = None

    rollouts.store.update("rol_retry", lose_the_restart_id)

    again = rollout_service.start_item(rollouts, "rol_retry", cluster.id)

    assert again["status"] == "running" and again["restart_id"] == first["restart_id"]
    assert len(restarts_of(aws, cluster.id)) == 1
    aws.wait_for_executions()


# ---------------------------------------------------------------- the rollout's execution history


@pytest.mark.time_scale(60)  # simulated waits long against moto's own overhead, as in AWS
def test_an_item_costs_the_rollout_history_a_handful_of_events(
    aws: LocalAws, seed: Seed, rollouts: RolloutDependencies
) -> None:
    """Given a rollout of 2 clusters, when it runs, then each item adds about 23 events to the
    rollout execution's history (one poll: at the restart's estimated completion), far under
    the per-item budget that MAX_ROLLOUT_TARGETS is derived from."""
    fleet = seed_fleet(seed, 2)

    report, record = run_rollout(
        aws,
        rollouts,
        {"maintenance_window": {"id": "mw-history"}, "cluster_ids": [c.id for c in fleet], "max_concurrency": 2},
    )

    assert report["successful_updates"] == 2, explain_restarts(aws, report)
    assert record.execution_arn
    history = aws.execution_history(record.execution_arn)
    per_item = (len(history) - ROLLOUT_FIXED_EVENTS) / len(fleet)
    polls = [e for name, e in aws.registry.invocations if name == "RolloutStepFunction" and e["action"] == "poll_item"]
    assert per_item <= ITEM_EVENTS_ONE_POLL + EVENTS_PER_EXTRA_POLL, (len(history), len(polls))
    assert len(polls) <= 2 * len(fleet)
    assert MAX_ROLLOUT_TARGETS * ITEM_EVENT_BUDGET + ROLLOUT_FIXED_EVENTS < HISTORY_EVENT_LIMIT * 0.9


def test_a_rollout_over_more_clusters_than_its_history_can_hold_is_refused(
    aws: LocalAws, seed: Seed, rollouts: RolloutDependencies, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = seed_fleet(seed, 3)
    monkeypatch.setattr("restarter.domain.rollouts.MAX_ROLLOUT_TARGETS", 2)
    body = RolloutSpec.model_validate({"maintenance_window": {"id": "mw-big"}, "labels": {"team": "ml"}})

    with pytest.raises(RequestValidationError) as refused:
        create_rollout(rollouts, body, requested_by="tests")

    assert refused.value.details["matched_clusters"] == len(fleet)
    assert refused.value.details["errors"][0]["field"] == "labels"
    assert "split" in refused.value.details["suggestion"].lower()
    assert aws.rollout_executions() == []
    with pytest.raises(ValueError, match="at most"):
        spec(cluster_ids=[f"cluster_{i}" for i in range(MAX_ROLLOUT_TARGETS + 1)])


# ---------------------------------------------------------------- starting and resuming


def test_given_a_window_that_opens_later_when_the_rollout_starts_then_no_restart_starts_before_it(
    aws: LocalAws, seed: Seed, rollouts: RolloutDependencies
) -> None:
    [cluster] = seed_fleet(seed, 1)
    opens = (aws.clock.now() + timedelta(minutes=20)).replace(microsecond=0)

    report, record = run_rollout(
        aws,
        rollouts,
        {
            "maintenance_window": {"id": "mw-later", "start": opens.isoformat(), "duration_minutes": 60},
            "cluster_ids": [cluster.id],
        },
    )

    assert report["successful_updates"] == 1
    assert record.window is not None and record.window.end == opens + timedelta(minutes=60)
    assert restarts_of(aws, cluster.id)[0].restart_initiated_at >= format_time(opens)
