"""The step loop, driven the way the state machine drives it, on the fakes: whole restarts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from restarter.domain.errors import ProviderError, TransientProviderError
from restarter.domain.inventory import CommandInvocation
from restarter.domain.models import RestartRecord, format_time, parse_time
from restarter.domain.outcome import GAVE_UP_NOTE, STORAGE_NOTE
from restarter.services.restart.runner import CLEANUP_MAX_POLLS, RestartRunner
from tests.unit.conftest import StartRestart
from tests.unit.fakes import FakeWorld
from tests.unit.restart.driver import DriveLog, drive

GRACEFUL_PHASES = [
    "stopping_processes",
    "rebooting",
    "starting_services",
    "health_checks",
    "ready",
]


def stored(world: FakeWorld, restart_id: str) -> RestartRecord:
    loaded = world.restarts.get(restart_id)
    assert loaded is not None
    return loaded[0]


def finished_audit(world: FakeWorld, cluster_id: str) -> list[str]:
    return [e["outcome"] for e in world.audit.entries(cluster_id) if e["action"] == "restart.finished"]


# ---------------------------------------------------------------- to ready


def test_given_a_running_cluster_when_restarted_gracefully_then_every_phase_runs_and_it_ends_ready(
    world: FakeWorld, start_restart: StartRestart
) -> None:
    cluster = world.seed_cluster()
    record = start_restart(cluster.id)

    log = drive(world, record.id)

    done = stored(world, record.id)
    assert log.caught is None
    assert log.phases() == GRACEFUL_PHASES
    assert [(e.phase, e.outcome) for e in done.phase_history] == [(p, "succeeded") for p in GRACEFUL_PHASES]
    assert world.provider.ops() == ["stop_services", "start_services", "health_check"]
    assert world.provider.called("reboot") == [cluster.instance_ids]
    assert done.status == "ready"
    assert done.progress.percentage == 100
    assert done.downtime_seconds is not None and done.restart_duration_seconds is not None
    after = world.clusters.get(cluster.id)
    assert after is not None and after.status == "running" and after.current_restart_id is None
    assert world.locks.holder(cluster.id) is None
    assert finished_audit(world, cluster.id) == ["ready"]
    [completed] = world.events.of_type("Restart Completed")
    assert completed["status"] == "ready" and completed["error"] is None
    assert [e["phase"] for e in world.events.of_type("Restart Phase Changed")] == GRACEFUL_PHASES


def test_given_a_step_when_it_answers_then_the_state_machine_gets_exactly_its_contract(
    world: FakeWorld, start_restart: StartRestart
) -> None:
    cluster = world.seed_cluster()
    record = start_restart(cluster.id)
    runner = RestartRunner(world.deps)

    polled = runner.advance(record.id, "stopping_processes", 0).to_output()
    finished = runner.advance(record.id, "stopping_processes", polled["attempt"]).to_output()

    assert polled == {"done": False, "attempt": 1, "wait_seconds": 30, "next": None}
    assert finished == {"done": True, "attempt": 0, "wait_seconds": 0, "next": "rebooting"}


def test_given_a_first_step_retried_when_it_runs_again_then_the_phase_is_entered_once(
    world: FakeWorld, start_restart: StartRestart
) -> None:
    cluster = world.seed_cluster()
    record = start_restart(cluster.id)
    runner = RestartRunner(world.deps)
    world.provider.fail("run_command", TransientProviderError("Rate exceeded"))

    with pytest.raises(TransientProviderError):
        runner.advance(record.id, "stopping_processes", 0)
    runner.advance(record.id, "stopping_processes", 0)

    done = stored(world, record.id)
    assert [e.phase for e in done.phase_history] == ["stopping_processes"]
    assert len(world.events.of_type("Restart Phase Changed")) == 1
    assert done.phase_state["stopping_processes"]["failure"]["code"] == "PROVIDER_BUSY"
    assert world.provider.ops() == ["stop_services"]


def test_given_a_stopped_cluster_when_restarted_then_it_is_started_without_a_graceful_stop(
    world: FakeWorld, start_restart: StartRestart
) -> None:
    cluster = world.seed_cluster(status="stopped")
    record = start_restart(cluster.id)

    log = drive(world, record.id)

    assert log.phases() == GRACEFUL_PHASES[1:]
    assert world.provider.called("start") == [cluster.instance_ids]
    assert stored(world, record.id).status == "ready"


# ---------------------------------------------------------------- checkpoint only with preserve_state


@pytest.mark.parametrize("preserve_state", [False, True])
def test_given_preserve_state_when_restarted_then_a_checkpoint_is_taken_only_if_asked(
    world: FakeWorld, start_restart: StartRestart, preserve_state: bool
) -> None:
    cluster = world.seed_cluster()
    record = start_restart(cluster.id, {"preserve_state": preserve_state})

    log = drive(world, record.id)

    after = world.clusters.get(cluster.id)
    assert after is not None
    assert ("creating_checkpoint" in log.phases()) is preserve_state
    assert bool(world.provider.called("create_checkpoint")) is preserve_state
    assert len(after.snapshots) == (1 if preserve_state else 0)
    assert (stored(world, record.id).changes.checkpoint_id is not None) is preserve_state
    assert stored(world, record.id).status == "ready"


def test_given_a_checkpoint_throttled_halfway_when_the_step_is_retried_then_no_instance_is_snapshotted_twice(
    world: FakeWorld, start_restart: StartRestart
) -> None:
    cluster = world.seed_cluster(instance_count=3)
    record = start_restart(cluster.id, {"preserve_state": True})
    real = world.provider.create_checkpoint
    calls = 0

    def second_call_throttled(instance_ids: list[str], tags: dict[str, str]) -> dict[str, dict[str, str]]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise TransientProviderError("Rate exceeded")
        return real(instance_ids, tags)

    world.provider.create_checkpoint = second_call_throttled  # type: ignore[method-assign]

    log = drive(world, record.id)

    assert log.retries == 1
    assert [args[0] for args in world.provider.called("create_checkpoint")] == [[i] for i in cluster.instance_ids]
    after = world.clusters.get(cluster.id)
    assert after is not None and set(after.snapshots[0].volume_snapshots) == set(cluster.instance_ids)


# ---------------------------------------------------------------- storage growth


def test_given_a_storage_growth_when_restarted_then_the_cluster_reports_the_grown_volumes(
    world: FakeWorld, start_restart: StartRestart
) -> None:
    cluster = world.seed_cluster()
    record = start_restart(cluster.id, {"update_configuration": {"storage_gb": 1000}})

    drive(world, record.id)

    done = stored(world, record.id)
    after = world.clusters.get(cluster.id)
    assert done.status == "ready"
    assert after is not None and after.storage_gb == 1000
    assert {v.size_gb for v in after.volumes if not v.is_root} == {1000}
    assert done.configuration_updates.pending == []
    assert done.configuration_updates.applied == done.change_lines["storage"]


def test_given_a_storage_growth_and_a_later_failure_when_rolled_back_then_the_growth_is_noted_as_kept(
    world: FakeWorld, start_restart: StartRestart
) -> None:
    cluster = world.seed_cluster()
    record = start_restart(cluster.id, {"update_configuration": {"storage_gb": 1000}})
    world.provider.instances[cluster.instance_ids[1]].visible_gpus = 0

    drive(world, record.id)

    done = stored(world, record.id)
    assert done.status == "failed"  # nothing that could be put back was changed
    assert STORAGE_NOTE in done.rollback_notes
    assert {v.size_gb for v in world.provider.volumes.values() if not v.is_root} == {1000}


# ---------------------------------------------------------------- failures


def test_given_a_new_image_that_fails_health_checks_when_restarted_then_the_old_image_is_rolled_back(
    world: FakeWorld, start_restart: StartRestart
) -> None:
    cluster = world.seed_cluster(environment={"MODEL_VERSION": "v1.0"})
    old_image = cluster.container.image
    record = start_restart(
        cluster.id,
        {"update_docker_image": "tensorone/pytorch:broken", "environment_updates": {"MODEL_VERSION": "v2.0"}},
    )

    def gpus_vanish_with_the_new_image(phase: str, attempt: int) -> None:
        if phase == "health_checks":
            for inst in world.provider.instances.values():
                inst.visible_gpus = 0 if inst.container_image == "tensorone/pytorch:broken" else None

    log = drive(world, record.id, gpus_vanish_with_the_new_image)

    done = stored(world, record.id)
    assert log.caught is not None and log.caught["Error"] == "PhaseFailedError"
    assert done.status == "rolled_back"
    assert done.error is not None
    assert (done.error.code, done.error.phase, done.error.message) == (
        "RESTART_FAILED",
        "health_checks",
        "Health checks failed",
    )
    assert set(done.error.details["problems"]) == set(cluster.instance_ids)
    assert done.phase_state["health_checks"]["last_problems"] == {"problems": done.error.details["problems"]}
    assert [e.outcome for e in done.phase_history if e.phase == "health_checks"] == ["failed"]
    after = world.clusters.get(cluster.id)
    assert after is not None
    assert after.container.image == old_image
    assert world.provider.get_environment(
        after.container.environment_parameter or "", after.container.environment_version
    ) == {"MODEL_VERSION": "v1.0"}
    assert {i.container_image for i in world.provider.instances.values()} == {old_image}
    assert after.status == "running"
    assert world.provider.ops()[-1] == "start_services"
    assert world.locks.holder(cluster.id) is None
    assert finished_audit(world, cluster.id) == ["rolled_back"]
    # the request's copy of the environment is forgotten once the restart ends
    assert done.target.environment_parameter not in world.provider.environments


def test_given_a_failed_instance_type_change_when_cleaned_up_then_the_old_type_is_back(
    world: FakeWorld, start_restart: StartRestart
) -> None:
    cluster = world.seed_cluster(instance_type="g5.xlarge")
    record = start_restart(cluster.id, {"update_configuration": {"cpu_cores": 16}})
    world.provider.command_status["start_services"] = "Failed"

    log = drive(world, record.id)

    done = stored(world, record.id)
    assert log.caught is not None
    assert done.status == "rolled_back"
    assert {i.instance_type for i in world.provider.instances.values()} == {"g5.xlarge"}
    assert not any(line in done.configuration_updates.applied for line in done.change_lines["instance_type"])
    after = world.clusters.get(cluster.id)
    assert after is not None and after.instance_type == "g5.xlarge"
    assert after.status == "error"  # the services did not come back either
    assert world.locks.holder(cluster.id) is None


def test_given_a_restart_past_its_deadline_when_the_next_step_runs_then_it_ends_timed_out(
    world: FakeWorld, start_restart: StartRestart
) -> None:
    cluster = world.seed_cluster()
    record = start_restart(cluster.id, {"timeout_minutes": 5, "grace_period_minutes": 1})

    def late(phase: str, attempt: int) -> None:
        if phase == "starting_services" and attempt == 0:
            world.clock.current = parse_time(record.deadline) + timedelta(seconds=1)

    log = drive(world, record.id, late)

    done = stored(world, record.id)
    assert log.caught is not None and log.caught["Error"] == "RestartTimedOutError"
    assert done.status == "timed_out"
    assert done.error is not None and done.error.code == "TIMED_OUT"
    assert done.error.phase == "starting_services"
    assert done.error.details["deadline"] == record.deadline
    assert done.error.message == "Restart exceeded its timeout of 5 minutes"
    assert world.locks.holder(cluster.id) is None
    after = world.clusters.get(cluster.id)
    assert after is not None and after.status == "running"  # cleanup brought the services back


def test_given_a_cancel_request_when_the_next_step_runs_then_the_restart_ends_cancelled(
    world: FakeWorld, start_restart: StartRestart
) -> None:
    cluster = world.seed_cluster()
    record = start_restart(cluster.id)

    def cancel(phase: str, attempt: int) -> None:
        if phase == "rebooting":

            def flag(r: RestartRecord) -> None:
                r.cancel_requested_at = format_time(world.clock.now())
                r.cancel_requested_by = "ops@example.com"

            world.restarts.update(record.id, flag)

    log = drive(world, record.id, cancel)

    done = stored(world, record.id)
    assert log.caught is not None and log.caught["Error"] == "RestartCancelledError"
    assert done.status == "cancelled"
    assert done.error is not None and done.error.code == "CANCELLED"
    assert done.error.message == "Restart cancelled by ops@example.com"
    assert world.provider.called("reboot") == []
    assert world.locks.holder(cluster.id) is None
    assert finished_audit(world, cluster.id) == ["cancelled"]


def test_given_health_checks_passed_when_a_cancel_arrives_then_ready_still_finishes(
    world: FakeWorld, start_restart: StartRestart
) -> None:
    cluster = world.seed_cluster()
    record = start_restart(cluster.id)

    def cancel_at_ready(phase: str, attempt: int) -> None:
        if phase == "ready":
            world.restarts.update(
                record.id, lambda r: setattr(r, "cancel_requested_at", format_time(world.clock.now()))
            )
            world.clock.current = parse_time(record.deadline) + timedelta(minutes=1)

    drive(world, record.id, cancel_at_ready)

    assert stored(world, record.id).status == "ready"


def test_given_instances_that_never_come_back_when_cleaning_up_then_cleanup_gives_up_and_flags_the_cluster(
    world: FakeWorld, start_restart: StartRestart
) -> None:
    cluster = world.seed_cluster()
    record = start_restart(cluster.id)
    world.provider.agents_offline.add(cluster.instance_ids[0])  # never ready for commands, not even cleanup's

    log = drive(world, record.id)

    done = stored(world, record.id)
    cleanup_steps = [s for s in log.steps if s[0] == "cleanup"]
    assert 1 < len(cleanup_steps) <= CLEANUP_MAX_POLLS + 1
    assert done.status == "timed_out"  # starting_services waited for the agent until the deadline
    assert done.error is not None and done.error.phase == "starting_services"
    assert done.rollback_notes == [GAVE_UP_NOTE]
    after = world.clusters.get(cluster.id)
    assert after is not None and after.status == "error"
    assert world.locks.holder(cluster.id) is None


# ---------------------------------------------------------------- the lock, on every path


def _ready(world: FakeWorld) -> None:
    pass


def _rolled_back(world: FakeWorld) -> None:
    world.provider.instances[next(iter(world.provider.instances))].visible_gpus = 0


def _failed_stop(world: FakeWorld) -> None:
    world.provider.command_status["stop_services"] = "Failed"


def _cleanup_fails(world: FakeWorld) -> None:
    """The stop command fails; from then on the cloud refuses every describe, so cleanup fails too."""
    _failed_stop(world)
    real = world.provider.command_invocations

    def then_describes_are_refused(command_id: str, instance_ids: list[str]) -> list[CommandInvocation]:
        invocations = real(command_id, instance_ids)
        world.provider.fail("describe_instances", ProviderError("UnauthorizedOperation"), times=100)
        return invocations

    world.provider.command_invocations = then_describes_are_refused  # type: ignore[method-assign]


@pytest.mark.parametrize(
    ("arrange", "body", "status", "abandoned"),
    [
        (_ready, {}, "ready", False),
        (_rolled_back, {"update_docker_image": "tensorone/pytorch:2.2"}, "rolled_back", False),
        (_failed_stop, {}, "failed", False),
        (_cleanup_fails, {}, "failed", True),
    ],
    ids=["ready", "rolled_back", "failed", "abandoned"],
)
def test_given_any_ending_when_the_restart_concludes_then_the_lock_is_released(
    world: FakeWorld,
    start_restart: StartRestart,
    arrange: Callable[[FakeWorld], None],
    body: dict[str, str],
    status: str,
    abandoned: bool,
) -> None:
    cluster = world.seed_cluster()
    record = start_restart(cluster.id, body)
    assert world.locks.holder(cluster.id) == record.id
    arrange(world)

    log: DriveLog = drive(world, record.id)

    assert log.abandoned is abandoned

    done = stored(world, record.id)
    assert done.status == status
    assert done.is_terminal
    assert world.locks.holder(cluster.id) is None
    assert finished_audit(world, cluster.id) == [status]
    after = world.clusters.get(cluster.id)
    assert after is not None and after.current_restart_id is None
    if abandoned:
        assert after.status == "error"
        assert done.rollback_notes[-1] == "cleanup failed: ProviderError; cluster needs attention"
