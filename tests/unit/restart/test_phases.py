"""Each phase, one step at a time, over a PhaseContext on the fakes."""

from __future__ import annotations

import pytest

from restarter.domain.errors import PhaseFailedError, TransientProviderError
from restarter.domain.models import RestartRecord
from restarter.services.restart.context import PhaseContext
from restarter.services.restart.phases.checkpoint import CheckpointState, creating_checkpoint
from restarter.services.restart.phases.configure import ConfigureState, updating_configuration
from restarter.services.restart.phases.health import HealthState
from restarter.services.restart.phases.reboot import RebootState, rebooting
from restarter.services.restart.phases.stop import StopState, stopping_processes
from restarter.services.restart.state import StateT, load_state, store_state
from tests.unit.conftest import StartRestart
from tests.unit.fakes import FakeWorld


def context(world: FakeWorld, record: RestartRecord, state: StateT) -> PhaseContext[StateT]:
    cluster = world.clusters.get(record.cluster_id)
    assert cluster is not None
    return PhaseContext(record=record, cluster=cluster, provider=world.provider, clock=world.clock, state=state)


# ---------------------------------------------------------------- stopping_processes


def test_given_a_running_cluster_when_processes_stop_then_services_get_the_grace_period(
    world: FakeWorld, start_restart: StartRestart
) -> None:
    cluster = world.seed_cluster()
    record = start_restart(cluster.id, {"grace_period_minutes": 2})
    ctx = context(world, record, StopState())

    first = stopping_processes(ctx)
    second = stopping_processes(ctx)

    assert (first, second) == (False, True)
    command = world.provider.commands[ctx.state.command_id or ""]
    assert command.op == "stop_services"
    assert command.args == {"grace_seconds": 120}
    assert ctx.state.instances == cluster.instance_ids
    assert record.downtime_started_at is not None
    assert all(world.provider.instances[i].container_image is None for i in cluster.instance_ids)


def test_given_no_running_instance_when_processes_stop_then_the_phase_is_skipped(
    world: FakeWorld, start_restart: StartRestart
) -> None:
    cluster = world.seed_cluster()
    record = start_restart(cluster.id)
    for inst in world.provider.instances.values():
        inst.state = "stopped"
    ctx = context(world, record, StopState())

    assert stopping_processes(ctx) is True
    assert ctx.state.skipped == "no running instance"
    assert world.provider.ops() == []


def test_given_a_stop_command_that_fails_when_polled_then_the_phase_fails_with_each_instance(
    world: FakeWorld, start_restart: StartRestart
) -> None:
    cluster = world.seed_cluster()
    record = start_restart(cluster.id)
    world.provider.command_status["stop_services"] = "Failed"
    ctx = context(world, record, StopState())
    stopping_processes(ctx)

    with pytest.raises(PhaseFailedError) as failed:
        stopping_processes(ctx)

    assert failed.value.message == "Graceful stop of services failed"
    assert [i["instance_id"] for i in failed.value.details["instances"]] == cluster.instance_ids


# ---------------------------------------------------------------- creating_checkpoint


def test_given_a_checkpoint_throttled_halfway_when_retried_then_each_instance_is_snapshotted_once(
    world: FakeWorld, start_restart: StartRestart
) -> None:
    cluster = world.seed_cluster(instance_count=3)
    record = start_restart(cluster.id, {"preserve_state": True})
    ctx = context(world, record, CheckpointState())
    calls = 0
    real = world.provider.create_checkpoint

    def throttled_second_call(instance_ids: list[str], tags: dict[str, str]) -> dict[str, dict[str, str]]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise TransientProviderError("Rate exceeded")
        return real(instance_ids, tags)

    world.provider.create_checkpoint = throttled_second_call  # type: ignore[method-assign]
    with pytest.raises(TransientProviderError):
        creating_checkpoint(ctx)
    checkpoint_id = ctx.state.checkpoint_id
    assert list(ctx.state.volume_snapshots) == cluster.instance_ids[:1]

    # the retried step starts from the state the failed one stored
    store_state(record, "creating_checkpoint", ctx.state)
    ctx.state = load_state(record, "creating_checkpoint", CheckpointState)
    assert creating_checkpoint(ctx) is False
    assert creating_checkpoint(ctx) is True

    snapshotted = [args[0] for args in world.provider.called("create_checkpoint")]
    assert snapshotted == [[iid] for iid in cluster.instance_ids]
    assert ctx.state.checkpoint_id == checkpoint_id
    [checkpoint] = ctx.cluster.snapshots
    assert checkpoint.id == record.changes.checkpoint_id == checkpoint_id
    assert set(checkpoint.volume_snapshots) == set(cluster.instance_ids)
    assert all(set(devices) == {"/dev/sda1", "/dev/sdf"} for devices in checkpoint.volume_snapshots.values())


def test_given_a_snapshot_in_error_when_polled_then_the_checkpoint_fails(
    world: FakeWorld, start_restart: StartRestart
) -> None:
    cluster = world.seed_cluster(instance_count=1)
    record = start_restart(cluster.id, {"preserve_state": True})
    ctx = context(world, record, CheckpointState())
    creating_checkpoint(ctx)
    broken = next(iter(world.provider.snapshots))
    world.provider.snapshots[broken] = "error"

    with pytest.raises(PhaseFailedError, match="Checkpoint snapshot failed"):
        creating_checkpoint(ctx)


# ---------------------------------------------------------------- updating_configuration


def test_given_a_larger_storage_size_when_configured_then_every_smaller_data_volume_grows(
    world: FakeWorld, start_restart: StartRestart
) -> None:
    cluster = world.seed_cluster()
    record = start_restart(cluster.id, {"update_configuration": {"storage_gb": 2000}})
    ctx = context(world, record, ConfigureState())

    steps = [updating_configuration(ctx) for _ in range(2)]

    assert steps == [False, True]
    data = [v for v in world.provider.volumes.values() if not v.is_root]
    roots = [v for v in world.provider.volumes.values() if v.is_root]
    assert {v.size_gb for v in data} == {2000}
    assert {v.size_gb for v in roots} == {100}  # the root volume is not the storage that grows
    assert record.changes.grown_volumes == {v.volume_id: 500 for v in data}
    assert ctx.state.storage_done
    assert record.configuration_updates.applied == record.change_lines["storage"]
    assert record.configuration_updates.pending == []


def test_given_a_cpu_upgrade_when_configured_then_each_instance_stops_and_changes_type(
    world: FakeWorld, start_restart: StartRestart
) -> None:
    cluster = world.seed_cluster(instance_type="g5.xlarge")
    record = start_restart(cluster.id, {"update_configuration": {"cpu_cores": 16}})
    ctx = context(world, record, ConfigureState())

    steps = [updating_configuration(ctx) for _ in range(3)]

    assert steps == [False, False, True]
    assert {i.instance_type for i in world.provider.instances.values()} == {"g5.4xlarge"}
    assert record.changes.previous_instance_types == dict.fromkeys(cluster.instance_ids, "g5.xlarge")
    assert [args[1] for args in world.provider.called("stop")] == [False, False]


def test_given_a_new_image_and_environment_when_configured_then_the_spec_is_staged_not_started(
    world: FakeWorld, start_restart: StartRestart
) -> None:
    cluster = world.seed_cluster(environment={"MODEL_VERSION": "v1.0", "OLD": "x"})
    record = start_restart(
        cluster.id,
        {
            "update_docker_image": "tensorone/pytorch:2.2-cuda12.1",
            "environment_updates": {"MODEL_VERSION": "v2.0", "OLD": None},
        },
    )
    ctx = context(world, record, ConfigureState())

    assert updating_configuration(ctx) is True

    spec = ctx.cluster.container
    assert spec.image == "tensorone/pytorch:2.2-cuda12.1"
    assert spec.environment_keys == ["MODEL_VERSION"]
    assert world.provider.get_environment(spec.environment_parameter or "", spec.environment_version) == {
        "MODEL_VERSION": "v2.0"
    }
    assert record.changes.previous_container == cluster.container
    assert world.provider.ops() == []  # the services start with it in starting_services
    assert record.configuration_updates.applied == []


# ---------------------------------------------------------------- rebooting


def test_given_a_graceful_restart_when_rebooting_then_instances_reboot_and_the_boot_is_a_settle_wait(
    world: FakeWorld, start_restart: StartRestart
) -> None:
    cluster = world.seed_cluster()
    record = start_restart(cluster.id)
    ctx = context(world, record, RebootState())

    assert rebooting(ctx) is True
    assert world.provider.called("reboot") == [cluster.instance_ids]
    assert ctx.state.action == "reboot"
    assert ctx.state.settle_seconds == 180


def test_given_a_force_restart_when_rebooting_then_instances_are_power_cycled(
    world: FakeWorld, start_restart: StartRestart
) -> None:
    cluster = world.seed_cluster()
    record = start_restart(cluster.id, {"force": True})
    ctx = context(world, record, RebootState())

    steps = [rebooting(ctx), rebooting(ctx)]

    assert steps == [False, True]
    assert world.provider.called("stop") == [(cluster.instance_ids, True)]
    assert world.provider.called("start") == [cluster.instance_ids]
    assert world.provider.called("reboot") == []
    assert ctx.state.action == "start"


# ---------------------------------------------------------------- the stored state


def test_given_a_phase_state_stored_before_the_models_when_loaded_then_its_keys_survive_a_round_trip(
    world: FakeWorld, start_restart: StartRestart
) -> None:
    record = start_restart(world.seed_cluster().id)
    record.phase_state["health_checks"] = {
        "command_id": "cmd-1",
        "instances": ["i-1"],
        "failures": 1,
        "last_problems": {"problems": {"i-1": ["x"]}},
        "failure": {"code": "PHASE_FAILED", "message": "m", "details": {"phase": "health_checks"}},
        "something_older": {"kept": True},
    }

    state = load_state(record, "health_checks", HealthState)
    store_state(record, "health_checks", state)

    assert state.command_id == "cmd-1" and state.model_extra == {"failures": 1, "something_older": {"kept": True}}
    assert state.failure is not None and state.failure.details == {"phase": "health_checks"}
    assert record.phase_state["health_checks"] == {
        "command_id": "cmd-1",
        "instances": ["i-1"],
        "failures": 1,
        "last_problems": {"problems": {"i-1": ["x"]}},
        "failure": {"code": "PHASE_FAILED", "message": "m", "details": {"phase": "health_checks"}},
        "something_older": {"kept": True},
    }
