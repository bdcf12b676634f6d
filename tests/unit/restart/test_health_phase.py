"""health_checks, on the fake cloud: ready only when every GPU is truly healthy.

Each test drives the phase step by step, moving the clock by the wait the state machine would
take, with the health report the instances print (the fake provider's sectioned report).
"""

from __future__ import annotations

from typing import Any

import pytest

from restarter.domain.errors import PhaseFailedError
from restarter.domain.models import Cluster, RestartRecord
from restarter.domain.planning import poll_delay
from restarter.services.restart.context import PhaseContext
from restarter.services.restart.phases.health import SETTLE_SECONDS, HealthState, health_checks
from tests.conftest import SHARED_DATA
from tests.unit.conftest import StartRestart
from tests.unit.fakes import FakeWorld

XID_LINES = [
    row.split("\t")[4]
    for row in (SHARED_DATA / "xid" / "xid_lines_from_test_fixtures.tsv").read_text().splitlines()
    if row and not row.startswith("#")
]


def xid_line(number: int) -> str:
    lines = [line for line in XID_LINES if f"): {number}," in line]
    assert lines, f"the shared data has an Xid {number} line"
    return lines[0]


def context(world: FakeWorld, record: RestartRecord) -> PhaseContext[HealthState]:
    cluster = world.clusters.get(record.cluster_id)
    assert cluster is not None
    return PhaseContext(
        record=record,
        cluster=cluster,
        provider=world.provider,
        clock=world.clock,
        state=HealthState(),
        health=world.health,
    )


def run_phase(world: FakeWorld, ctx: PhaseContext[HealthState], on_poll: Any = None) -> int:
    """Step the phase until it passes (returns the polls it took) or raises."""
    for attempt in range(50):
        if health_checks(ctx):
            return attempt
        if on_poll:
            on_poll(attempt)
        world.clock.advance(poll_delay("health_checks", attempt))
    raise AssertionError("the phase never concluded")


@pytest.fixture
def cluster(world: FakeWorld) -> Cluster:
    return world.seed_cluster()


def first_instance(world: FakeWorld, cluster: Cluster) -> Any:
    return world.provider.instances[cluster.instance_ids[0]]


def test_given_healthy_gpus_when_checked_then_ready_and_the_report_is_kept(
    world: FakeWorld, start_restart: StartRestart, cluster: Cluster
) -> None:
    ctx = context(world, start_restart(cluster.id))

    assert run_phase(world, ctx) == 1

    assert world.provider.commands[ctx.state.command_id or ""].args == {
        "ports": [{"internal_port": 8888, "external_port": 30888, "protocol": "tcp"}],
        "expected_gpus": 8,
    }
    reports = world.health.reports(cluster.id)
    assert sorted(r.instance_id for r in reports) == sorted(cluster.instance_ids)
    assert all(r.verdict == "healthy" and r.source == "restart" for r in reports)
    assert all(r.assessment is not None and r.assessment.visible_gpus == 8 for r in reports)


def test_given_a_gpu_that_enumerates_late_when_it_appears_within_the_settle_window_then_ready(
    world: FakeWorld, start_restart: StartRestart, cluster: Cluster
) -> None:
    instance = first_instance(world, cluster)
    instance.visible_gpus = 7
    ctx = context(world, start_restart(cluster.id))

    def appear(attempt: int) -> None:
        if attempt == 3:
            instance.visible_gpus = None

    assert run_phase(world, ctx, appear) > 3
    assert world.provider.ops().count("health_check") >= 2
    assert world.health.report(cluster.id, instance.instance_id).missing_streak == 0  # type: ignore[union-attr]


def test_given_a_gpu_missing_beyond_the_settle_window_then_the_phase_fails_with_the_finding(
    world: FakeWorld, start_restart: StartRestart, cluster: Cluster
) -> None:
    first_instance(world, cluster).visible_gpus = 7
    ctx = context(world, start_restart(cluster.id))

    with pytest.raises(PhaseFailedError) as failed:
        run_phase(world, ctx)

    details = failed.value.details
    assert details["waited_seconds"] >= SETTLE_SECONDS and details["checks"] >= 3
    (finding,) = details["findings"]
    assert finding["instance_id"] == cluster.instance_ids[0]
    assert finding["code"] == "gpu_missing" and finding["action"] == "reboot"
    assert world.health.report(cluster.id, cluster.instance_ids[0]).missing_streak == 1  # type: ignore[union-attr]


def test_given_gpus_missing_in_two_reports_in_a_row_then_the_finding_asks_for_a_new_host(
    world: FakeWorld, start_restart: StartRestart, cluster: Cluster
) -> None:
    first_instance(world, cluster).visible_gpus = 7
    with pytest.raises(PhaseFailedError):
        run_phase(world, context(world, start_restart(cluster.id)))
    world.locks.held.clear()
    stored = world.clusters.get(cluster.id)
    assert stored is not None
    stored.current_restart_id, stored.status = None, "running"
    world.clusters.put(stored)

    with pytest.raises(PhaseFailedError) as failed:
        run_phase(world, context(world, start_restart(cluster.id)))

    assert [f["action"] for f in failed.value.details["findings"]] == ["stop_start"]


def test_given_xid_79_since_boot_then_the_phase_fails_at_the_first_report_without_waiting(
    world: FakeWorld, start_restart: StartRestart, cluster: Cluster
) -> None:
    first_instance(world, cluster).kernel_lines = [xid_line(79)]
    ctx = context(world, start_restart(cluster.id))

    with pytest.raises(PhaseFailedError) as failed:
        run_phase(world, ctx)

    assert ctx.state.checks == 1
    (finding,) = failed.value.details["findings"]
    assert finding["code"] == "xid_79" and finding["action"] == "reboot" and finding["xid"] == 79
    assert finding["evidence"] in xid_line(79) or xid_line(79) in finding["evidence"]


def test_given_a_pending_row_remap_then_the_phase_fails_at_once(
    world: FakeWorld, start_restart: StartRestart, cluster: Cluster
) -> None:
    first_instance(world, cluster).gpu_overrides = {3: {"remapped_rows.pending": "Yes"}}
    ctx = context(world, start_restart(cluster.id))

    with pytest.raises(PhaseFailedError) as failed:
        run_phase(world, ctx)

    (finding,) = failed.value.details["findings"]
    assert finding["code"] == "row_remap_pending" and finding["gpu_index"] == 3 and finding["action"] == "reboot"


def test_given_an_application_xid_alone_then_ready_with_the_finding_reported(
    world: FakeWorld, start_restart: StartRestart, cluster: Cluster
) -> None:
    first_instance(world, cluster).kernel_lines = [xid_line(13)]
    ctx = context(world, start_restart(cluster.id))

    run_phase(world, ctx)

    reported = ctx.state.reported_findings or []
    assert [(f["code"], f["action"]) for f in reported] == [("xid_13", "report")]
    report = world.health.report(cluster.id, cluster.instance_ids[0])
    assert report is not None and report.verdict == "healthy" and report.findings[0].xid == 13
