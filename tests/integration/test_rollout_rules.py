"""The pure rules of rollouts: targets, production policy, image overrides, failure threshold,
window, the seed's summary, the polling schedule of an item and the bounds of an inline map."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from restarter.domain.errors import NotFoundError, RequestValidationError
from restarter.domain.models import Cluster, ContainerSpec
from restarter.domain.rollouts import (
    MAX_CONCURRENCY,
    ItemResult,
    MaintenanceWindow,
    RolloutRecord,
    check_resume_window,
    first_wait_seconds,
    may_start,
    next_poll_seconds,
    request_for,
    select_targets,
    summarize,
    window_closed,
)
from restarter.handlers.rollout_step import RolloutStepEvent
from tests.conftest import EVENTS
from tests.integration.harness import SEED_RESULT_KEYS, spec

# ---------------------------------------------------------------- pure rules


def cluster(cluster_id: str, name: str, **labels: str) -> Cluster:
    return Cluster(
        id=cluster_id,
        name=name,
        region="us-east-1",
        instance_ids=["i-0123456789abcdef0"],
        instance_type="g5.xlarge",
        labels=labels,
        container=ContainerSpec(image="tensorone/pytorch:2.1-cuda12.1"),
    )


FLEET = [
    cluster("cluster_c", "prod-inference", env="production", team="ml"),
    cluster("cluster_a", "ml-training", env="dev", team="ml"),
    cluster("cluster_b", "eval-cluster", env="dev", team="research"),
]


def results(*statuses: str) -> list[ItemResult]:
    return [ItemResult(cluster_id=f"cluster_{i}", name=f"c{i}", status=s) for i, s in enumerate(statuses)]  # type: ignore[arg-type]


def test_targets_by_ids_keep_the_given_order_and_must_exist() -> None:
    assert [c.id for c in select_targets(spec(cluster_ids=["cluster_c", "cluster_a"]), FLEET)] == [
        "cluster_c",
        "cluster_a",
    ]
    with pytest.raises(NotFoundError):
        select_targets(spec(cluster_ids=["cluster_a", "cluster_zzz"]), FLEET)


def test_targets_by_labels_and_by_name_pattern() -> None:
    by_labels = select_targets(spec(cluster_ids=None, labels={"team": "ml"}), FLEET)
    assert [c.id for c in by_labels] == ["cluster_a", "cluster_c"]
    by_name = select_targets(spec(cluster_ids=None, name_pattern="*-cluster"), FLEET)
    assert [c.id for c in by_name] == ["cluster_b"]


def test_exactly_one_target_selector_and_a_valid_request_body() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        spec(labels={"team": "ml"})
    with pytest.raises(ValueError, match="exactly one"):
        spec(cluster_ids=None)
    with pytest.raises(RequestValidationError):
        spec(request={"grace_period_minutes": 99})
    with pytest.raises(ValueError):
        spec(max_concurrency=51)


def test_production_label_drives_the_gentler_settings_and_images_override_per_cluster() -> None:
    rollout = spec(
        request={"wait_for_ready": True, "timeout_minutes": 20, "apply_system_updates": True},
        docker_updates={"cluster_a": "tensorone/pytorch:2.2-cuda12.1"},
    )
    prod = request_for(rollout, FLEET[0])
    dev = request_for(rollout, FLEET[1])

    assert (prod.grace_period_minutes, prod.preserve_state) == (15, True)
    assert (dev.grace_period_minutes, dev.preserve_state) == (5, False)
    assert dev.update_docker_image == "tensorone/pytorch:2.2-cuda12.1"
    assert prod.update_docker_image is None
    assert prod.restart_reason == dev.restart_reason == "Maintenance window: mw-2024-01-15"
    assert dev.apply_system_updates and dev.timeout_minutes == 20

    # the label, not the name, decides; and another label can be named production
    named_prod = cluster("cluster_x", "prod-but-unlabelled")
    assert request_for(rollout, named_prod).preserve_state is False
    custom = spec(production_label="tier=critical")
    assert request_for(custom, cluster("cluster_y", "y", tier="critical")).preserve_state is True


def test_failure_threshold_by_count_and_by_percentage() -> None:
    by_count = spec(failure_threshold={"count": 2})
    assert may_start(results("failed", "pending", "pending"), by_count)
    assert not may_start(results("failed", "failed", "pending"), by_count)

    by_share = spec(failure_threshold={"percentage": 25})
    assert may_start(results("failed", "succeeded", "running", "pending", "pending"), by_share)  # 20 %
    assert not may_start(results("failed", "succeeded", "pending", "pending"), by_share)  # 25 %

    unlimited = spec()
    assert may_start(results("failed", "failed", "pending"), unlimited)
    with pytest.raises(ValueError):
        spec(failure_threshold={"count": 1, "percentage": 10})


def test_window_closes_at_its_end() -> None:
    end = datetime(2024, 1, 15, 18, 0, tzinfo=UTC)
    rollout = spec(maintenance_window={"id": "mw", "end": "2024-01-15T18:00:00Z"})
    assert not window_closed(rollout, end - timedelta(seconds=1))
    assert window_closed(rollout, end)
    assert not window_closed(spec(), end)


def test_summary_is_the_seeds_shape() -> None:
    record = RolloutRecord(
        rollout_id="rol_abc",
        spec=spec(),
        requested_by="tests",
        created_at="2024-01-15T17:00:00Z",
        results=[
            ItemResult(cluster_id="cluster_a", name="a", status="succeeded", success=True, downtime_seconds=90),
            ItemResult(cluster_id="cluster_b", name="b", status="failed", error="boom"),
            ItemResult(cluster_id="cluster_c", name="c", status="skipped"),
        ],
    )
    summary = summarize(record)
    assert summary["maintenance_window"] == "mw-2024-01-15"
    assert (summary["total_clusters"], summary["successful_updates"], summary["failed"], summary["skipped"]) == (
        3,
        1,
        1,
        1,
    )
    assert all(set(r) >= SEED_RESULT_KEYS for r in summary["results"])


def test_sample_step_event_parses() -> None:
    event = RolloutStepEvent.model_validate(json.loads((EVENTS / "rollout_step_start_item.json").read_text()))
    assert event.action == "start_item" and event.cluster_id == "cluster_abc123"
    with pytest.raises(ValueError):
        RolloutStepEvent.model_validate({"action": "poll_item", "rollout_id": "rol_x", "cluster_id": "c"})


def test_an_item_first_polls_when_its_restart_should_be_done_then_backs_off_until_its_deadline() -> None:
    now = datetime(2024, 1, 15, 2, 0, tzinfo=UTC)
    # the first poll: the estimate, never sooner than 30 s nor later than 15 minutes
    assert first_wait_seconds(now + timedelta(minutes=8), now) == 480
    assert first_wait_seconds(now + timedelta(seconds=5), now) == 30
    assert first_wait_seconds(now + timedelta(hours=2), now) == 900
    # then 30 s doubling to 15 minutes, never past the restart's deadline, then its give-up time
    deadline, give_up = now + timedelta(hours=1), now + timedelta(hours=1, minutes=30)
    assert [next_poll_seconds(polls, now, deadline, give_up) for polls in range(7)] == [30, 60, 120, 240, 480, 900, 900]
    assert next_poll_seconds(6, deadline - timedelta(seconds=100), deadline, give_up) == 101
    assert next_poll_seconds(6, deadline + timedelta(seconds=10), deadline, give_up) == 900
    assert next_poll_seconds(6, give_up - timedelta(seconds=60), deadline, give_up) == 61


def test_max_concurrency_is_bounded_by_what_an_inline_map_honours() -> None:
    assert spec(max_concurrency=MAX_CONCURRENCY).max_concurrency == 40
    with pytest.raises(ValueError, match="less than or equal to 40"):
        spec(max_concurrency=41)


def test_a_window_must_be_consistent_and_open_within_a_day() -> None:
    with pytest.raises(ValueError, match="not both"):
        MaintenanceWindow.model_validate({"id": "w", "end": "2024-01-15T06:00:00Z", "duration_minutes": 30})
    with pytest.raises(ValueError, match="after start"):
        MaintenanceWindow.model_validate({"id": "w", "start": "2024-01-15T06:00:00Z", "end": "2024-01-15T05:00:00Z"})
    now = datetime(2024, 1, 15, 2, 0, tzinfo=UTC)
    with pytest.raises(RequestValidationError):
        check_resume_window(MaintenanceWindow(id="w", end=now - timedelta(minutes=1)), now)
    with pytest.raises(RequestValidationError):
        check_resume_window(MaintenanceWindow(id="w", start=now + timedelta(hours=25)), now)
    check_resume_window(MaintenanceWindow(id="w", start=now + timedelta(hours=20), duration_minutes=60), now)
