"""A forced restart of a scarce GPU type whose StartInstances EC2 refuses for want of capacity
(`InsufficientInstanceCapacity`, the most common real failure of a stop/start): it waits for
capacity with a growing wait inside the restart's deadline, then ends `failed` with the
instances recorded as stopped and what to do about it."""

from __future__ import annotations

from restarter.domain.errors import InsufficientCapacityError
from restarter.domain.models import RestartRecord
from restarter.domain.planning import CAPACITY_SUGGESTION
from tests.unit.conftest import StartRestart
from tests.unit.fakes import FakeWorld
from tests.unit.restart.driver import drive


def no_capacity() -> InsufficientCapacityError:
    return InsufficientCapacityError(
        "ec2:StartInstances: EC2 has no capacity for now: We currently do not have sufficient p4d.24xlarge capacity",
        {"operation": "ec2:StartInstances", "aws_error_code": "InsufficientInstanceCapacity"},
    )


def stored(world: FakeWorld, restart_id: str) -> RestartRecord:
    found = world.restarts.get(restart_id)
    assert found is not None
    return found[0]


def test_given_capacity_that_frees_up_when_forced_then_the_start_is_tried_again_and_the_restart_is_ready(
    world: FakeWorld, start_restart: StartRestart
) -> None:
    cluster = world.seed_cluster()
    world.provider.fail("start", no_capacity(), times=3)
    record = start_restart(cluster.id, {"force": True, "timeout_minutes": 60})

    log = drive(world, record.id)

    assert stored(world, record.id).status == "ready"
    assert len(world.provider.called("start")) == 1  # the three refused calls raised before recording
    waits = [out["wait_seconds"] for phase, _, out in log.steps if phase == "rebooting" and not out["done"]]
    # the force stop's first poll, then a doubling wait for capacity after each refusal
    assert waits[:4] == [180, 30, 60, 120]


def test_given_no_capacity_until_the_deadline_when_forced_then_failed_with_the_instances_stopped(
    world: FakeWorld, start_restart: StartRestart
) -> None:
    cluster = world.seed_cluster()
    world.provider.fail("start", no_capacity(), times=1000)
    record = start_restart(cluster.id, {"force": True, "timeout_minutes": 15})

    drive(world, record.id)

    ended = stored(world, record.id)
    assert ended.status == "failed"
    assert ended.error is not None and ended.error.phase == "rebooting"
    details = ended.error.details
    assert details["aws_error_code"] == "InsufficientInstanceCapacity"
    assert details["stopped_instances"] == cluster.instance_ids and details["instance_type"] == "p4d.24xlarge"
    assert details["suggestion"] == CAPACITY_SUGGESTION and details["attempts"] >= 2
    assert any("InsufficientInstanceCapacity" in note for note in ended.rollback_notes)
    after = world.clusters.get(cluster.id)
    assert after is not None and after.status == "stopped" and after.current_restart_id is None
    assert all(world.provider.instances[i].state == "stopped" for i in cluster.instance_ids)
    assert world.locks.holder(cluster.id) is None
