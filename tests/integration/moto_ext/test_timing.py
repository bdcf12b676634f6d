"""Realistic, time-scaled instance transitions of the simulated fleet (``moto_ext/timing.py``).

Every test drives moto through boto3 inside ``mock_aws()`` after ``install_extensions(state)``.
Transitions run 1000x faster than real time and last 400-500 ms; the tests poll with a deadline,
check that each phase is seen in order (a read may straddle a phase's end: extra values between
phases are tolerated) and only ever assert lower bounds on elapsed time, never exact durations.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto import mock_aws

from restarter_local.moto_ext import (
    InstanceTimings,
    SimulatedAgentState,
    active_state,
    install_extensions,
    set_active_state,
)
from restarter_local.moto_ext.timing import plan_transition

REGION = "us-east-1"
AMI = "ami-12c6146b"  # one of moto's default AMIs
NO_RETRIES = Config(retries={"total_max_attempts": 1})
SCALE = 1000.0
# Simulated seconds: 400-500 s each, so 400-500 ms real at SCALE.
TIMINGS = InstanceTimings(
    stop=(1200, 1500), start=(1200, 1500), reboot=(1200, 1500), status_checks=(1200, 1500), jitter=7, time_scale=SCALE
)
LOWEST = 400 / SCALE
DEADLINE = 5.0


# -- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture
def state() -> Iterator[SimulatedAgentState]:
    """Overrides conftest's `state`: the fleet runs with TIMINGS (the moto fixtures there build on it)."""
    previous = active_state()
    fleet = SimulatedAgentState(timings=TIMINGS)
    install_extensions(fleet)
    try:
        yield fleet
    finally:
        fleet.reset()
        set_active_state(previous)


def launch(ec2: Any, count: int = 1) -> list[str]:
    response = ec2.run_instances(ImageId=AMI, MinCount=count, MaxCount=count, InstanceType="p5.48xlarge")
    return [instance["InstanceId"] for instance in response["Instances"]]


def state_name(ec2: Any, instance_id: str) -> str:
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return str(instance["State"]["Name"])


def checks(ec2: Any, instance_id: str) -> tuple[str, str, str]:
    """(state, instance status, system status) as DescribeInstanceStatus shows them."""
    [status] = ec2.describe_instance_status(InstanceIds=[instance_id], IncludeAllInstances=True)["InstanceStatuses"]
    return status["InstanceState"]["Name"], status["InstanceStatus"]["Status"], status["SystemStatus"]["Status"]


def ping(ssm: Any, instance_id: str) -> str:
    [info] = ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": [instance_id]}])[
        "InstanceInformationList"
    ]
    return str(info["PingStatus"])


def observe(read: Callable[[], Any], final: Any, deadline: float = DEADLINE) -> list[Any]:
    """The distinct values ``read`` returns, in order, until it returns ``final`` (or time is up)."""
    seen: list[Any] = []
    end = time.monotonic() + deadline
    while True:
        value = read()
        if not seen or seen[-1] != value:
            seen.append(value)
        if value == final or time.monotonic() > end:
            return seen
        time.sleep(0.005)


def assert_passes_through(seen: list[Any], expected: list[Any]) -> None:
    """``seen`` starts and ends as ``expected`` does and shows every expected value in order."""
    assert seen[0] == expected[0], seen
    assert seen[-1] == expected[-1], seen
    remaining = iter(seen)
    assert all(value in remaining for value in expected), seen


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def health_check(ssm: Any, instance_id: str) -> dict[str, Any]:
    command = ssm.send_command(
        InstanceIds=[instance_id],
        DocumentName="AWS-RunShellScript",
        Parameters={"commands": ["# restarter-op: health_check", f"# restarter-args: {json.dumps({'ports': []})}"]},
    )["Command"]
    result: dict[str, Any] = ssm.get_command_invocation(CommandId=command["CommandId"], InstanceId=instance_id)
    return result


def stopped_instance(ec2: Any) -> str:
    [instance_id] = launch(ec2)
    ec2.stop_instances(InstanceIds=[instance_id], Force=True)
    assert observe(lambda: state_name(ec2, instance_id), "stopped")[-1] == "stopped"
    return instance_id


# -- InstanceTimings ------------------------------------------------------------------------------


def test_given_the_same_jitter_seed_when_durations_are_drawn_then_they_repeat_within_their_ranges() -> None:
    # given two timings with the same seed and one with another
    first, second, other = InstanceTimings(jitter=42), InstanceTimings(jitter=42), InstanceTimings(jitter=43)
    # when durations are drawn from each
    draws = [[t.draw("reboot") for _ in range(5)] for t in (first, second, other)]
    # then the same seed gives the same durations, within the reboot range (the vendor's 3-5 min)
    assert draws[0] == draws[1] != draws[2]
    assert all(180 <= value <= 300 for row in draws for value in row)
    assert InstanceTimings().stop == (20, 60) and InstanceTimings().start == (30, 90)
    assert InstanceTimings().status_checks == (30, 90)


def test_given_invalid_ranges_or_scale_when_timings_are_built_then_they_are_refused() -> None:
    with pytest.raises(ValueError, match="stop"):
        InstanceTimings(stop=(60, 20))
    with pytest.raises(ValueError, match="reboot"):
        InstanceTimings(reboot=(-1, 5))
    with pytest.raises(ValueError, match="time_scale"):
        InstanceTimings(time_scale=0)


def test_given_a_time_scale_when_a_transition_is_planned_then_it_lasts_simulated_over_scale_real_seconds() -> None:
    # given 600 simulated seconds per real second and fixed ranges
    timings = InstanceTimings(stop=(120, 120), start=(60, 60), status_checks=(30, 30), time_scale=600)
    # when transitions are planned at monotonic time 100
    stop = plan_transition(timings, "stop", now=100.0)
    start = plan_transition(timings, "start", now=100.0)
    # then they end simulated / scale real seconds later
    assert stop is not None and stop.ends_at == pytest.approx(100.2)
    assert start is not None and [phase.until for phase in start.phases] == pytest.approx([100.1, 100.15])
    # and without timings nothing is planned unless the instance never comes back
    assert plan_transition(None, "reboot", now=100.0) is None
    assert plan_transition(None, "stop", now=100.0, stuck=True) is None


# -- stop -----------------------------------------------------------------------------------------


def test_given_timings_when_an_instance_is_stopped_then_it_is_stopping_before_stopped(ec2: Any) -> None:
    # given a running instance
    [instance_id] = launch(ec2)
    # when it is stopped
    began = time.monotonic()
    response = ec2.stop_instances(InstanceIds=[instance_id])["StoppingInstances"][0]
    seen = observe(lambda: state_name(ec2, instance_id), "stopped")
    # then it passes through stopping to stopped, taking at least the shortest stop
    assert (response["PreviousState"]["Name"], response["CurrentState"]["Name"]) == ("running", "stopping")
    assert_passes_through(seen, ["stopping", "stopped"])
    assert time.monotonic() - began >= LOWEST
    # and state filters see the same state
    stopped = ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["stopped"]}])
    assert [i["InstanceId"] for r in stopped["Reservations"] for i in r["Instances"]] == [instance_id]


def test_given_timings_when_force_stopped_then_the_low_end_of_stop_is_used(state: SimulatedAgentState) -> None:
    # given stops that take 400 s to 1 day (0.4 s to 86 s real)
    state.timings = InstanceTimings(stop=(400, 86400), time_scale=SCALE)
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION, config=NO_RETRIES)
        forced, cut_short = launch(ec2, count=2)
        ec2.stop_instances(InstanceIds=[cut_short])
        # when one is force-stopped and the other, already stopping, is force-stopped too
        ec2.stop_instances(InstanceIds=[forced], Force=True)
        ec2.stop_instances(InstanceIds=[cut_short], Force=True)
        seen = observe(lambda: (state_name(ec2, forced), state_name(ec2, cut_short)), ("stopped", "stopped"), 3.0)
        # then both are stopped after about the low end (well before the deadline)
        assert seen[0] == ("stopping", "stopping")
        assert seen[-1] == ("stopped", "stopped")


def test_given_a_stopping_instance_when_its_type_is_changed_then_it_is_refused_until_stopped(ec2: Any) -> None:
    # given a stopping instance
    [instance_id] = launch(ec2)
    ec2.stop_instances(InstanceIds=[instance_id])
    # when its type is changed while stopping
    with pytest.raises(ClientError) as exc:
        ec2.modify_instance_attribute(InstanceId=instance_id, InstanceType={"Value": "p4d.24xlarge"})
    # then AWS's IncorrectInstanceState is answered
    assert error_code(exc) == "IncorrectInstanceState"
    assert "'stopped' state" in exc.value.response["Error"]["Message"]
    # and once stopped the change works
    assert observe(lambda: state_name(ec2, instance_id), "stopped")[-1] == "stopped"
    ec2.modify_instance_attribute(InstanceId=instance_id, InstanceType={"Value": "p4d.24xlarge"})
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    assert instance["InstanceType"] == "p4d.24xlarge"


def test_given_a_stopping_instance_when_started_or_rebooted_or_commanded_then_aws_refuses(ec2: Any, ssm: Any) -> None:
    # given a stopping instance
    [instance_id] = launch(ec2)
    ec2.stop_instances(InstanceIds=[instance_id])
    # when it is started, rebooted and sent a command
    with pytest.raises(ClientError) as start:
        ec2.start_instances(InstanceIds=[instance_id])
    with pytest.raises(ClientError) as reboot:
        ec2.reboot_instances(InstanceIds=[instance_id])
    with pytest.raises(ClientError) as command:
        health_check(ssm, instance_id)
    # then each is refused as AWS refuses it
    assert (error_code(start), error_code(reboot), error_code(command)) == (
        "IncorrectInstanceState",
        "IncorrectInstanceState",
        "InvalidInstanceId",
    )
    # and its agent is not reachable
    assert ping(ssm, instance_id) == "ConnectionLost"


# -- start ----------------------------------------------------------------------------------------


def test_given_a_stopped_instance_when_started_then_pending_running_and_status_checks_initializing_then_ok(
    ec2: Any, ssm: Any
) -> None:
    # given a stopped instance
    instance_id = stopped_instance(ec2)
    # when it is started
    began = time.monotonic()
    response = ec2.start_instances(InstanceIds=[instance_id])["StartingInstances"][0]
    seen = observe(lambda: checks(ec2, instance_id), ("running", "ok", "ok"))
    # then it is pending, then running with status checks initializing, then ok
    assert response["PreviousState"]["Name"] == "stopped"
    assert_passes_through(
        seen,
        [
            ("pending", "not-applicable", "not-applicable"),
            ("running", "initializing", "initializing"),
            ("running", "ok", "ok"),
        ],
    )
    assert time.monotonic() - began >= 2 * LOWEST
    # and its agent is back online, answering commands
    assert ping(ssm, instance_id) == "Online"
    assert health_check(ssm, instance_id)["Status"] == "Success"


def test_given_a_pending_instance_when_commanded_then_it_is_not_a_valid_target(
    ec2: Any, ssm: Any, state: SimulatedAgentState
) -> None:
    # given a pending instance (held pending, so a slow machine cannot let it finish booting)
    instance_id = stopped_instance(ec2)
    state.never_comes_back(instance_id)
    ec2.start_instances(InstanceIds=[instance_id])
    # when a command is sent and the managed node described
    with pytest.raises(ClientError) as exc:
        health_check(ssm, instance_id)
    # then SendCommand refuses it and its agent is ConnectionLost
    assert error_code(exc) == "InvalidInstanceId"
    assert ping(ssm, instance_id) == "ConnectionLost"
    # and a running-instances-only DescribeInstanceStatus does not list it yet
    assert ec2.describe_instance_status(InstanceIds=[instance_id])["InstanceStatuses"] == []


# -- reboot ---------------------------------------------------------------------------------------


def test_given_timings_when_rebooted_then_running_with_checks_initializing_and_agent_lost_until_back(
    ec2: Any, ssm: Any
) -> None:
    # given a running instance
    [instance_id] = launch(ec2)
    # when it is rebooted
    began = time.monotonic()
    ec2.reboot_instances(InstanceIds=[instance_id])
    during = health_check(ssm, instance_id)
    seen = observe(lambda: (*checks(ec2, instance_id), ping(ssm, instance_id)), ("running", "ok", "ok", "Online"))
    # then it stays running, its checks initializing and its agent ConnectionLost, then all is well
    assert_passes_through(
        seen,
        [("running", "initializing", "initializing", "ConnectionLost"), ("running", "ok", "ok", "Online")],
    )
    assert time.monotonic() - began >= LOWEST
    # and a command sent during the reboot was not delivered, one sent after succeeds
    assert (during["Status"], during["StatusDetails"]) == ("Failed", "DeliveryTimedOut")
    assert health_check(ssm, instance_id)["Status"] == "Success"


def test_given_a_stopped_instance_when_rebooted_then_aws_refuses(ec2: Any) -> None:
    instance_id = stopped_instance(ec2)
    with pytest.raises(ClientError) as exc:
        ec2.reboot_instances(InstanceIds=[instance_id])
    assert error_code(exc) == "IncorrectInstanceState"
    assert state_name(ec2, instance_id) == "stopped"


# -- never comes back -----------------------------------------------------------------------------


def test_given_never_comes_back_when_started_then_it_stays_pending(
    state: SimulatedAgentState, ec2: Any, ssm: Any
) -> None:
    # given a stopped instance that never comes back
    instance_id = stopped_instance(ec2)
    state.never_comes_back(instance_id)
    # when it is started and watched for longer than any start takes
    ec2.start_instances(InstanceIds=[instance_id])
    seen = observe(lambda: state_name(ec2, instance_id), "running", deadline=1.5)
    # then it is still pending and unreachable
    assert seen == ["pending"]
    assert ping(ssm, instance_id) == "ConnectionLost"
    # and it can still be stopped; once cleared, the next start comes back
    ec2.stop_instances(InstanceIds=[instance_id], Force=True)
    assert_passes_through(observe(lambda: state_name(ec2, instance_id), "stopped"), ["stopping", "stopped"])
    state.clear_never_comes_back(instance_id)
    ec2.start_instances(InstanceIds=[instance_id])
    assert_passes_through(observe(lambda: state_name(ec2, instance_id), "running"), ["pending", "running"])


def test_given_never_comes_back_when_rebooted_then_status_checks_end_impaired(
    state: SimulatedAgentState, ec2: Any, ssm: Any
) -> None:
    # given a running instance that never comes back
    [instance_id] = launch(ec2)
    state.never_comes_back(instance_id)
    # when it is rebooted
    ec2.reboot_instances(InstanceIds=[instance_id])
    seen = observe(lambda: checks(ec2, instance_id), ("running", "impaired", "impaired"))
    # then its checks go from initializing to impaired and stay so, with its agent lost
    assert_passes_through(seen, [("running", "initializing", "initializing"), ("running", "impaired", "impaired")])
    time.sleep(2 * LOWEST)
    assert checks(ec2, instance_id) == ("running", "impaired", "impaired")
    assert ping(ssm, instance_id) == "ConnectionLost"
    [status] = ec2.describe_instance_status(InstanceIds=[instance_id])["InstanceStatuses"]
    assert status["InstanceStatus"]["Details"][0]["Status"] == "failed"
    assert "ImpairedSince" in status["InstanceStatus"]["Details"][0]


# -- off by default, reset, threads ---------------------------------------------------------------


def test_given_no_timings_when_instances_change_state_then_moto_is_instant() -> None:
    # given the default state (timings None)
    previous = active_state()
    fleet = SimulatedAgentState()
    assert fleet.timings is None
    install_extensions(fleet)
    try:
        with mock_aws():
            ec2 = boto3.client("ec2", region_name=REGION, config=NO_RETRIES)
            ssm = boto3.client("ssm", region_name=REGION, config=NO_RETRIES)
            [instance_id] = launch(ec2)
            # when it is rebooted, stopped, modified while running and started
            ec2.reboot_instances(InstanceIds=[instance_id])
            after_reboot = (*checks(ec2, instance_id), ping(ssm, instance_id))
            ec2.modify_instance_attribute(InstanceId=instance_id, InstanceType={"Value": "p4d.24xlarge"})
            ec2.stop_instances(InstanceIds=[instance_id])
            after_stop = state_name(ec2, instance_id)
            ec2.start_instances(InstanceIds=[instance_id])
            after_start = (*checks(ec2, instance_id), ping(ssm, instance_id))
            # then every change is immediate, as moto ships it
            assert after_reboot == ("running", "ok", "ok", "Online")
            assert after_stop == "stopped"
            assert after_start == ("running", "ok", "ok", "Online")
            # and never_comes_back still strands a start
            ec2.stop_instances(InstanceIds=[instance_id])
            fleet.never_comes_back(instance_id)
            ec2.start_instances(InstanceIds=[instance_id])
            assert state_name(ec2, instance_id) == "pending"
    finally:
        fleet.reset()
        set_active_state(previous)


def test_given_a_running_transition_when_the_state_is_reset_then_moto_state_shows(
    state: SimulatedAgentState, ec2: Any
) -> None:
    # given a stuck start
    instance_id = stopped_instance(ec2)
    state.never_comes_back(instance_id)
    ec2.start_instances(InstanceIds=[instance_id])
    assert state_name(ec2, instance_id) == "pending"
    # when the state is reset
    state.reset()
    # then the instance shows the state moto gave it, and the timings are kept
    assert state_name(ec2, instance_id) == "running"
    assert state.timings is TIMINGS


def test_given_concurrent_threads_when_instances_cycle_then_each_ends_where_it_should(ec2: Any) -> None:
    # given eight running instances
    instance_ids = launch(ec2, count=8)
    errors: list[BaseException] = []

    def cycle(instance_id: str) -> None:
        client = boto3.client("ec2", region_name=REGION, config=NO_RETRIES)
        try:
            client.stop_instances(InstanceIds=[instance_id])
            assert observe(lambda: state_name(client, instance_id), "stopped")[-1] == "stopped"
            client.start_instances(InstanceIds=[instance_id])
            assert observe(lambda: checks(client, instance_id), ("running", "ok", "ok"))[-1] == ("running", "ok", "ok")
        except BaseException as exc:  # reported to the main thread
            errors.append(exc)

    # when each is stopped and started from its own thread
    threads = [threading.Thread(target=cycle, args=(instance_id,)) for instance_id in instance_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # then all are running and healthy
    assert errors == []
    statuses = ec2.describe_instance_status(InstanceIds=instance_ids)["InstanceStatuses"]
    assert sorted(s["InstanceId"] for s in statuses if s["InstanceStatus"]["Status"] == "ok") == sorted(instance_ids)
