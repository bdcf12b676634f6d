"""`wait_for_ready`: the API answers once the restart has ended everywhere, not between two writes."""

from __future__ import annotations

from restarter.services.restart_api import wait_until_finished
from tests.unit.conftest import StartRestart
from tests.unit.fakes import FakeWorld


def test_a_terminal_record_whose_cluster_and_lock_are_not_yet_released_is_waited_for(
    world: FakeWorld, start_restart: StartRestart
) -> None:
    # given a restart whose record says ready while the cluster still names it and the lock is held
    world.seed_cluster()
    accepted = start_restart()
    world.restarts.update(accepted.id, lambda r: setattr(r, "status", "ready"))
    polls: list[float] = []

    def conclude_on_second_poll(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) == 2:  # the step writes the cluster, then releases the lock
            cluster = world.clusters.get(accepted.cluster_id)
            assert cluster is not None
            cluster.current_restart_id, cluster.status = None, "running"
            world.clusters.put(cluster)
            world.locks.release(accepted.cluster_id, accepted.id)

    # when the API waits for it
    waited = wait_until_finished(world.deps, accepted.id, 25, sleep=conclude_on_second_poll)

    # then it answers only once both are released, and as finished
    assert len(polls) == 2
    assert waited.finished and waited.record.status == "ready"
    cluster = world.clusters.get(accepted.cluster_id)
    assert cluster is not None and cluster.status == "running"
    assert world.locks.holder(accepted.cluster_id) is None


def test_a_running_restart_is_answered_unfinished_when_the_budget_runs_out(
    world: FakeWorld, start_restart: StartRestart
) -> None:
    # given a restart still in its first phase
    world.seed_cluster()
    accepted = start_restart()

    # when the API waits with a budget of zero
    waited = wait_until_finished(world.deps, accepted.id, 0, sleep=lambda _: None)

    # then it answers at once, unfinished
    assert not waited.finished and waited.record.status == accepted.status
