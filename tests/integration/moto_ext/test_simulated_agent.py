"""The local extensions of moto: fault injection, the simulated SSM agent and the missing APIs.

Every test drives moto through boto3 inside ``mock_aws()`` after ``install_extensions(state)``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.core.responses import BaseResponse

from restarter_local.moto_ext import (
    SimulatedAgentState,
    active_state,
    default_fatal_xid_line,
    install_extensions,
    set_active_state,
    xid_line,
)
from restarter_local.moto_ext.data import A100_XML, DATA_DIR, H100_CAPTURE, NVIDIA_SMI_NAMES

REGION = "us-east-1"
AMI = "ami-12c6146b"  # one of moto's default AMIs
NO_RETRIES = Config(retries={"total_max_attempts": 1})
PORTS = [{"internal_port": 8080, "external_port": 80, "protocol": "tcp"}]
IMAGE = "nvcr.io/nvidia/pytorch:24.01-py3"
SHARED_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"


# -- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture
def state() -> Iterator[SimulatedAgentState]:
    """A fresh state made active for the test; the previously active one is restored after."""
    previous = active_state()
    fleet = SimulatedAgentState()
    install_extensions(fleet)
    try:
        yield fleet
    finally:
        fleet.reset()
        set_active_state(previous)


@pytest.fixture
def aws(state: SimulatedAgentState) -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def ec2(aws: None) -> Any:
    return boto3.client("ec2", region_name=REGION, config=NO_RETRIES)


@pytest.fixture
def ssm(aws: None) -> Any:
    return boto3.client("ssm", region_name=REGION, config=NO_RETRIES)


def launch(ec2: Any, instance_type: str = "p5.48xlarge", count: int = 1) -> list[str]:
    response = ec2.run_instances(
        ImageId=AMI,
        MinCount=count,
        MaxCount=count,
        InstanceType=instance_type,
        BlockDeviceMappings=[
            {"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 50, "DeleteOnTermination": True}},
            {"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 500}},
        ],
    )
    return [instance["InstanceId"] for instance in response["Instances"]]


def script(op: str, args: dict[str, Any]) -> list[str]:
    return [
        f"# restarter-op: {op}",
        f"# restarter-args: {json.dumps(args, sort_keys=True)}",
        "set -euo pipefail",
        "echo this script is not run by the simulated agent",
    ]


def send(ssm: Any, instance_ids: list[str], op: str, args: dict[str, Any]) -> str:
    response = ssm.send_command(
        InstanceIds=instance_ids,
        DocumentName="AWS-RunShellScript",
        Parameters={"commands": script(op, args)},
    )
    return str(response["Command"]["CommandId"])


def invocation(ssm: Any, command_id: str, instance_id: str) -> dict[str, Any]:
    result: dict[str, Any] = ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
    return result


def run(ssm: Any, instance_id: str, op: str, args: dict[str, Any]) -> dict[str, Any]:
    return invocation(ssm, send(ssm, [instance_id], op, args), instance_id)


def health(ssm: Any, instance_id: str, ports: list[dict[str, Any]] = PORTS) -> str:
    result = run(ssm, instance_id, "health_check", {"ports": ports, "expected_gpus": 8})
    assert result["Status"] == "Success"
    return str(result["StandardOutputContent"])


def error_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response = exc.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def root_volume_id(ec2: Any, instance_id: str) -> str:
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    for mapping in instance["BlockDeviceMappings"]:
        if mapping["DeviceName"] == instance["RootDeviceName"]:
            return str(mapping["Ebs"]["VolumeId"])
    raise AssertionError("no root volume")


# -- installation -------------------------------------------------------------------------------


def test_install_is_idempotent_and_counts_each_call_once(state: SimulatedAgentState, ec2: Any) -> None:
    # given the extensions installed several times
    install_extensions(state)
    install_extensions(state)
    wrapped = BaseResponse.call_action
    install_extensions(state)
    assert BaseResponse.call_action is wrapped
    # when one API call is made
    ec2.describe_instances()
    # then it is counted once
    assert state.calls[("ec2", "DescribeInstances")] == 1


def test_without_an_active_state_moto_answers_as_shipped(state: SimulatedAgentState, ec2: Any, ssm: Any) -> None:
    # given an instance and no active state
    [instance_id] = launch(ec2)
    set_active_state(None)
    # when a command runs
    result = run(ssm, instance_id, "health_check", {"ports": PORTS, "expected_gpus": 8})
    # then moto's own canned answer comes back and nothing is recorded
    assert result["Status"] == "Success"
    assert result["StandardOutputContent"] == ""
    assert set(state.calls) == {("ec2", "RunInstances")}


def test_last_request_parameters_are_kept_per_action(state: SimulatedAgentState, ec2: Any, ssm: Any) -> None:
    # given an instance
    [instance_id] = launch(ec2)
    # when it is force-stopped and its agent looked up
    ec2.stop_instances(InstanceIds=[instance_id], Force=True)
    ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": [instance_id]}])
    # then the parameters of the last call of each action are available
    assert state.last_requests[("ec2", "StopInstances")] == {"InstanceIds": [instance_id], "Force": True}
    assert state.last_requests[("ssm", "DescribeInstanceInformation")] == {
        "Filters": [{"Key": "InstanceIds", "Values": [instance_id]}]
    }


# -- throttling ---------------------------------------------------------------------------------


def test_ec2_throttling_answers_request_limit_exceeded_then_lets_calls_through(
    state: SimulatedAgentState, ec2: Any
) -> None:
    # given a running instance and RebootInstances throttled twice
    [instance_id] = launch(ec2)
    state.throttle("ec2", "RebootInstances", 2)
    # when it is rebooted three times
    errors = []
    for _ in range(2):
        with pytest.raises(ClientError) as exc:
            ec2.reboot_instances(InstanceIds=[instance_id])
        errors.append(error_of(exc))
        assert exc.value.response["Error"]["Message"] == "Request limit exceeded."
    ec2.reboot_instances(InstanceIds=[instance_id])
    # then the first two fail like AWS (503 RequestLimitExceeded) and the counters say so
    assert errors == [("RequestLimitExceeded", 503)] * 2
    assert state.throttled_calls[("ec2", "RebootInstances")] == 2
    assert state.calls[("ec2", "RebootInstances")] == 3


def test_ssm_throttling_answers_throttling_exception(state: SimulatedAgentState, ec2: Any, ssm: Any) -> None:
    # given SendCommand throttled once
    [instance_id] = launch(ec2)
    state.throttle("ssm", "SendCommand", 1)
    # when a command is sent twice
    with pytest.raises(ClientError) as exc:
        send(ssm, [instance_id], "health_check", {"ports": [], "expected_gpus": 8})
    command_id = send(ssm, [instance_id], "health_check", {"ports": [], "expected_gpus": 8})
    # then the first is refused with the JSON-protocol ThrottlingException (400), the second runs
    assert error_of(exc) == ("ThrottlingException", 400)
    assert invocation(ssm, command_id, instance_id)["Status"] == "Success"
    assert state.throttled_calls[("ssm", "SendCommand")] == 1
    assert state.calls[("ssm", "SendCommand")] == 2


def test_any_action_can_be_throttled_including_added_ones(state: SimulatedAgentState, ssm: Any) -> None:
    # given an action moto does not ship (added by the extensions) throttled once
    state.throttle("ssm", "DescribeInstanceInformation", 1)
    # when it is called twice
    with pytest.raises(ClientError) as exc:
        ssm.describe_instance_information()
    ssm.describe_instance_information()
    # then only the first is refused
    assert error_of(exc) == ("ThrottlingException", 400)
    assert state.calls[("ssm", "DescribeInstanceInformation")] == 2


def test_throttling_error_code_can_be_overridden(state: SimulatedAgentState, ec2: Any) -> None:
    # given a throttle with a custom code
    state.throttle("ec2", "DescribeInstances", 1, error_code="Throttling")
    # when the action is called
    with pytest.raises(ClientError) as exc:
        ec2.describe_instances()
    # then that code comes back
    assert error_of(exc)[0] == "Throttling"


# -- instance status checks ---------------------------------------------------------------------


def test_never_healthy_instance_stays_initializing_until_cleared(state: SimulatedAgentState, ec2: Any) -> None:
    # given a running instance marked never healthy
    [instance_id] = launch(ec2)
    state.set_never_healthy(instance_id)
    # when its status is described
    status = ec2.describe_instance_status(InstanceIds=[instance_id])["InstanceStatuses"][0]
    # then both checks are initializing
    assert status["InstanceState"]["Name"] == "running"
    assert status["InstanceStatus"]["Status"] == "initializing"
    assert status["SystemStatus"]["Status"] == "initializing"
    # and once cleared they are ok again
    state.clear_never_healthy(instance_id)
    status = ec2.describe_instance_status(InstanceIds=[instance_id])["InstanceStatuses"][0]
    assert (status["InstanceStatus"]["Status"], status["SystemStatus"]["Status"]) == ("ok", "ok")


# -- DescribeInstanceInformation ----------------------------------------------------------------


def test_instance_information_reports_ping_status(state: SimulatedAgentState, ec2: Any, ssm: Any) -> None:
    # given a running instance, a stopped one and one whose agent is offline
    running, stopped, offline = launch(ec2, count=3)
    ec2.stop_instances(InstanceIds=[stopped])
    state.set_agent_offline(offline)
    # when the managed nodes are described
    infos = {i["InstanceId"]: i for i in ssm.describe_instance_information()["InstanceInformationList"]}
    # then only the running one with a live agent is Online
    assert {iid: info["PingStatus"] for iid, info in infos.items()} == {
        running: "Online",
        stopped: "ConnectionLost",
        offline: "ConnectionLost",
    }
    info = infos[running]
    assert (info["PlatformType"], info["PlatformName"], info["PlatformVersion"]) == ("Linux", "Ubuntu", "22.04")
    assert info["ResourceType"] == "EC2Instance"
    assert info["AgentVersion"]
    assert info["LastPingDateTime"]
    # and the agent comes back online when the fault is lifted
    state.set_agent_offline(offline, False)
    [info] = ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": [offline]}])[
        "InstanceInformationList"
    ]
    assert info["PingStatus"] == "Online"


def test_instance_information_filters(state: SimulatedAgentState, ec2: Any, ssm: Any) -> None:
    # given two instances
    first, second = launch(ec2, count=2)
    # when filtered by id in both filter styles
    by_filters = ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": [second]}])
    by_list = ssm.describe_instance_information(
        InstanceInformationFilterList=[{"key": "InstanceIds", "valueSet": [first]}]
    )
    # then each returns only the asked instance
    assert [i["InstanceId"] for i in by_filters["InstanceInformationList"]] == [second]
    assert [i["InstanceId"] for i in by_list["InstanceInformationList"]] == [first]
    # and an unknown key is refused
    with pytest.raises(ClientError) as exc:
        ssm.describe_instance_information(Filters=[{"Key": "Nonsense", "Values": ["x"]}])
    assert error_of(exc)[0] == "InvalidFilterKey"


# -- the simulated agent: our ops ---------------------------------------------------------------


def test_health_check_reports_gpus_from_the_instance_type(state: SimulatedAgentState, ec2: Any, ssm: Any) -> None:
    # given instances of three types
    [p5] = launch(ec2, "p5.48xlarge")
    [g5] = launch(ec2, "g5.xlarge")
    [cpu] = launch(ec2, "t3.micro")
    # when each runs the health check
    p5_lines = health(ssm, p5).splitlines()
    g5_lines = health(ssm, g5).splitlines()
    cpu_lines = health(ssm, cpu).splitlines()
    # then the GPU lines follow `nvidia-smi -L` with the type's GPUs
    assert p5_lines[0] == "gpus: 8"
    assert [line.split(" (UUID")[0] for line in p5_lines[1:9]] == [
        f"gpu: GPU {i}: NVIDIA H100 80GB HBM3" for i in range(8)
    ]
    assert all(line.endswith(")") and "(UUID: GPU-" in line for line in p5_lines[1:9])
    assert len({line.split("UUID: ")[1] for line in p5_lines[1:9]}) == 8
    assert g5_lines[:2][0] == "gpus: 1"
    assert g5_lines[1].startswith("gpu: GPU 0: NVIDIA A10G (UUID: GPU-")
    assert cpu_lines[0] == "gpus: 0"
    assert not any(line.startswith("gpu:") for line in cpu_lines)
    # and the UUIDs are stable between checks
    assert health(ssm, p5).splitlines()[1:9] == p5_lines[1:9]


def test_a_command_reaches_only_the_instances_it_names(state: SimulatedAgentState, ec2: Any, ssm: Any) -> None:
    """moto, given InstanceIds and no Targets, sends the command to every instance of the
    region; two clusters restarting at once then started each other's containers."""
    # given two clusters' instances
    ours, theirs = launch(ec2, "g5.xlarge"), launch(ec2, "g5.xlarge", count=2)
    # when a command names only ours
    command = ssm.send_command(
        InstanceIds=ours,
        DocumentName="AWS-RunShellScript",
        Parameters={
            "commands": [
                "# restarter-op: start_services",
                f"# restarter-args: {json.dumps({'image': IMAGE, 'ports': PORTS})}",
            ]
        },
    )["Command"]
    # then only ours ran it
    assert command["InstanceIds"] == ours
    invocations = ssm.list_command_invocations(CommandId=command["CommandId"])["CommandInvocations"]
    assert [i["InstanceId"] for i in invocations] == ours
    assert set(state.containers) == set(ours)
    assert not set(theirs) & set(state.containers)


def test_start_health_stop_cycle_tracks_the_container(state: SimulatedAgentState, ec2: Any, ssm: Any) -> None:
    # given a fresh GPU instance
    [instance_id] = launch(ec2, "p4d.24xlarge")
    # when nothing was started yet
    before = health(ssm, instance_id)
    # then the container is missing and its port closed
    assert before.splitlines()[9:] == ["container: missing", "port: tcp/80 closed"]

    # when the services start
    started = run(
        ssm,
        instance_id,
        "start_services",
        {"image": IMAGE, "ports": PORTS, "environment_parameter": None},
    )
    # then the output names a container id and the image, and the state has the container
    assert started["Status"] == "Success"
    lines = started["StandardOutputContent"].splitlines()
    assert lines[-1] == f"started {IMAGE}"
    assert len(lines[-2]) == 64
    int(lines[-2], 16)
    assert state.containers[instance_id] == {"image": IMAGE, "ports": PORTS, "running": True}
    # and the health check shows it running with the port open
    assert health(ssm, instance_id) == (
        "gpus: 8\n"
        + "".join(f"gpu: {line}\n" for line in _gpu_lines(health(ssm, instance_id)))
        + f"container: running {IMAGE}\nport: tcp/80 open\n"
    )

    # when the services stop
    stopped = run(ssm, instance_id, "stop_services", {"grace_seconds": 30})
    # then docker's name line and the summary are printed and the container is exited
    assert stopped["Status"] == "Success"
    assert stopped["StandardOutputContent"] == "restarter-workload\nstopped services within 30s\n"
    assert state.containers[instance_id]["running"] is False
    assert health(ssm, instance_id).splitlines()[9:] == [f"container: exited {IMAGE}", "port: tcp/80 closed"]


def _gpu_lines(report: str) -> list[str]:
    return [line.removeprefix("gpu: ") for line in report.splitlines() if line.startswith("gpu: ")]


def test_health_check_reports_closed_ports_and_unpublished_ports(
    state: SimulatedAgentState, ec2: Any, ssm: Any
) -> None:
    # given a running container publishing container port 8080 on host port 80, with 8080 made to not answer
    [instance_id] = launch(ec2, "g5.xlarge")
    state.start_container(instance_id, IMAGE, PORTS)
    state.close_port(instance_id, 8080)
    # when the check asks for 8080 and for a port the container does not publish
    ports = [*PORTS, {"internal_port": 9090, "external_port": 9090, "protocol": "tcp"}]
    report = health(ssm, instance_id, ports)
    # then both are closed, each reported by the host port the check probes
    assert report.splitlines()[-2:] == ["port: tcp/80 closed", "port: tcp/9090 closed"]
    # and re-opening the port opens it
    state.open_port(instance_id, 8080)
    assert "port: tcp/80 open" in health(ssm, instance_id).splitlines()


def test_health_check_reports_injected_xid_lines(state: SimulatedAgentState, ec2: Any, ssm: Any) -> None:
    # given a default fatal Xid and a chosen one injected
    [instance_id] = launch(ec2)
    state.inject_xid(instance_id)
    state.inject_xid(instance_id, xid_line(119))
    # when the health check runs
    report = health(ssm, instance_id).splitlines()
    # then the kernel lines are reported, the default being a real Xid 79 line
    assert report[-2:] == [f"xid: {default_fatal_xid_line()}", f"xid: {xid_line(119)}"]
    assert "NVRM: Xid (PCI:0000:91:00): 79," in default_fatal_xid_line()
    assert "GPU has fallen off the bus" in default_fatal_xid_line()
    # and clearing removes them
    state.clear_xid(instance_id)
    assert not any(line.startswith("xid:") for line in health(ssm, instance_id).splitlines())


def test_failed_command_reports_exit_code_and_stderr(state: SimulatedAgentState, ec2: Any, ssm: Any) -> None:
    # given start_services failing once on the instance
    [instance_id] = launch(ec2)
    state.fail_command(instance_id, "start_services", stderr="docker: Error response from daemon", times=1)
    args = {"image": IMAGE, "ports": PORTS, "environment_parameter": None}
    # when it is sent twice
    first = run(ssm, instance_id, "start_services", args)
    second = run(ssm, instance_id, "start_services", args)
    # then the first fails like a shell script exiting 1, without side effects, the second succeeds
    assert (first["Status"], first["StatusDetails"], first["ResponseCode"]) == ("Failed", "Failed", 1)
    assert first["StandardErrorContent"] == "docker: Error response from daemon"
    assert second["Status"] == "Success"
    assert state.containers[instance_id]["running"] is True


def test_command_fault_without_times_lasts_until_cleared(state: SimulatedAgentState, ec2: Any, ssm: Any) -> None:
    # given a permanent health_check fault
    [instance_id] = launch(ec2)
    state.fail_command(instance_id, "health_check", stderr="nvidia-smi: not found")
    # when the check runs three times
    statuses = [run(ssm, instance_id, "health_check", {"ports": []})["Status"] for _ in range(3)]
    # then all fail, until the fault is cleared
    assert statuses == ["Failed"] * 3
    state.clear_command_fault(instance_id, "health_check")
    assert run(ssm, instance_id, "health_check", {"ports": []})["Status"] == "Success"


def test_command_status_is_failed_when_any_invocation_fails(state: SimulatedAgentState, ec2: Any, ssm: Any) -> None:
    # given two instances, one failing the op
    good, bad = launch(ec2, count=2)
    state.fail_command(bad, "stop_services")
    # when the op is sent to both
    response = ssm.send_command(
        InstanceIds=[good, bad],
        DocumentName="AWS-RunShellScript",
        Parameters={"commands": script("stop_services", {"grace_seconds": 10})},
    )
    command_id = response["Command"]["CommandId"]
    # then SendCommand answers Pending like AWS, and the command ends Failed with one error
    assert response["Command"]["Status"] == "Pending"
    [command] = ssm.list_commands(CommandId=command_id)["Commands"]
    assert (command["Status"], command["ErrorCount"], command["CompletedCount"]) == ("Failed", 1, 2)
    assert invocation(ssm, command_id, good)["Status"] == "Success"
    assert invocation(ssm, command_id, bad)["Status"] == "Failed"
    # and the agent logged what it received
    assert {(c.instance_id, c.op, c.status) for c in state.command_log} == {
        (good, "stop_services", "Success"),
        (bad, "stop_services", "Failed"),
    }
    assert state.command_log[0].args == {"grace_seconds": 10}


def test_offline_agent_times_out_delivery(state: SimulatedAgentState, ec2: Any, ssm: Any) -> None:
    # given an instance whose SSM agent lost its connection
    [instance_id] = launch(ec2)
    state.set_agent_offline(instance_id)
    # when a command is sent
    command_id = send(ssm, [instance_id], "health_check", {"ports": []})
    result = invocation(ssm, command_id, instance_id)
    # then the invocation ends Failed / DeliveryTimedOut without running, and the command counts it
    assert (result["Status"], result["StatusDetails"], result["ResponseCode"]) == (
        "Failed",
        "DeliveryTimedOut",
        -1,
    )
    assert result["StandardOutputContent"] == ""
    [command] = ssm.list_commands(CommandId=command_id)["Commands"]
    assert (command["Status"], command["DeliveryTimedOutCount"], command["ErrorCount"]) == ("Failed", 1, 0)


def test_send_command_refuses_instances_that_are_not_running(state: SimulatedAgentState, ec2: Any, ssm: Any) -> None:
    # given a stopped instance
    [instance_id] = launch(ec2)
    ec2.stop_instances(InstanceIds=[instance_id], Force=True)
    # when a command is sent to it, or to an unknown instance
    with pytest.raises(ClientError) as stopped:
        send(ssm, [instance_id], "health_check", {"ports": []})
    with pytest.raises(ClientError) as unknown:
        send(ssm, ["i-0123456789abcdef0"], "health_check", {"ports": []})
    # then SSM answers InvalidInstanceId like AWS
    assert error_of(stopped)[0] == "InvalidInstanceId"
    assert instance_id in stopped.value.response["Error"]["Message"]
    assert error_of(unknown)[0] == "InvalidInstanceId"


def test_invalid_args_marker_fails_the_command(state: SimulatedAgentState, ec2: Any, ssm: Any) -> None:
    # given a command whose args line is not JSON
    [instance_id] = launch(ec2)
    command_id = ssm.send_command(
        InstanceIds=[instance_id],
        DocumentName="AWS-RunShellScript",
        Parameters={"commands": ["# restarter-op: health_check", "# restarter-args: {not json", "true"]},
    )["Command"]["CommandId"]
    # when its result is read
    result = invocation(ssm, command_id, instance_id)
    # then it failed, saying why
    assert result["Status"] == "Failed"
    assert "restarter-args" in result["StandardErrorContent"]


def test_commands_without_markers_and_patch_baseline(state: SimulatedAgentState, ec2: Any, ssm: Any) -> None:
    # given an instance
    [instance_id] = launch(ec2)
    # when a plain shell command and the patch baseline run
    plain = ssm.send_command(
        InstanceIds=[instance_id], DocumentName="AWS-RunShellScript", Parameters={"commands": ["uptime"]}
    )["Command"]["CommandId"]
    patch = ssm.send_command(
        InstanceIds=[instance_id],
        DocumentName="AWS-RunPatchBaseline",
        Parameters={"Operation": ["Install"], "RebootOption": ["NoReboot"]},
    )["Command"]["CommandId"]
    # then both succeed; the patch run prints a patch summary from its PatchLinux plugin
    assert invocation(ssm, plain, instance_id)["Status"] == "Success"
    patched = invocation(ssm, patch, instance_id)
    assert patched["Status"] == "Success"
    assert patched["PluginName"] == "PatchLinux"
    assert "Installed: 12" in patched["StandardOutputContent"]
    assert "Failed: 0" in patched["StandardOutputContent"]
    # and a fault keyed by the document name applies to unmarked commands
    state.fail_command(instance_id, "AWS-RunPatchBaseline", stderr="apt-get failed", times=1)
    failed = ssm.send_command(
        InstanceIds=[instance_id], DocumentName="AWS-RunPatchBaseline", Parameters={"Operation": ["Install"]}
    )["Command"]["CommandId"]
    assert invocation(ssm, failed, instance_id)["Status"] == "Failed"


def test_list_command_invocations_with_details(state: SimulatedAgentState, ec2: Any, ssm: Any) -> None:
    # given a health check sent to two instances, one failing
    good, bad = launch(ec2, "g5.xlarge", count=2)
    state.fail_command(bad, "health_check", stderr="boom\n")
    command_id = send(ssm, [good, bad], "health_check", {"ports": []})
    # when the invocations are listed with details
    listed = ssm.list_command_invocations(CommandId=command_id, Details=True)["CommandInvocations"]
    # then each carries its plugin's status, code and output
    by_id = {inv["InstanceId"]: inv for inv in listed}
    [good_plugin] = by_id[good]["CommandPlugins"]
    [bad_plugin] = by_id[bad]["CommandPlugins"]
    assert (good_plugin["Name"], good_plugin["Status"], good_plugin["ResponseCode"]) == (
        "aws:runShellScript",
        "Success",
        0,
    )
    assert good_plugin["Output"].startswith("gpus: 1\ngpu: GPU 0: NVIDIA A10G")
    assert (by_id[bad]["Status"], bad_plugin["ResponseCode"]) == ("Failed", 1)
    assert bad_plugin["Output"] == "\n----------ERROR-------\nboom\n"
    # and without details, or filtered by instance, the shape follows the API
    plain = ssm.list_command_invocations(CommandId=command_id)["CommandInvocations"]
    assert all(inv["CommandPlugins"] == [] for inv in plain)
    only = ssm.list_command_invocations(CommandId=command_id, InstanceId=bad)["CommandInvocations"]
    assert [inv["InstanceId"] for inv in only] == [bad]


# -- CreateReplaceRootVolumeTask ----------------------------------------------------------------


def _snapshots_by_volume(ec2: Any, instance_id: str) -> dict[str, str]:
    snapshots = ec2.create_snapshots(
        InstanceSpecification={"InstanceId": instance_id, "ExcludeBootVolume": False},
        CopyTagsFromSource="volume",
        TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": "restarter:checkpoint", "Value": "c1"}]}],
    )["Snapshots"]
    return {s["VolumeId"]: s["SnapshotId"] for s in snapshots}


def test_replace_root_volume_from_a_root_snapshot(state: SimulatedAgentState, ec2: Any) -> None:
    # given a running instance and a snapshot of its root volume
    [instance_id] = launch(ec2)
    old_root = root_volume_id(ec2, instance_id)
    snapshot_id = _snapshots_by_volume(ec2, instance_id)[old_root]
    # when the root volume is replaced from it
    task = ec2.create_replace_root_volume_task(
        InstanceId=instance_id,
        SnapshotId=snapshot_id,
        DeleteReplacedRootVolume=False,
        TagSpecifications=[
            {"ResourceType": "replace-root-volume-task", "Tags": [{"Key": "restarter:restart", "Value": "rst_1"}]}
        ],
    )["ReplaceRootVolumeTask"]
    # then the task succeeded
    assert task["ReplaceRootVolumeTaskId"].startswith("replacevol-")
    assert len(task["ReplaceRootVolumeTaskId"]) == len("replacevol-") + 17
    assert (task["InstanceId"], task["TaskState"], task["SnapshotId"]) == (instance_id, "succeeded", snapshot_id)
    assert task["DeleteReplacedRootVolume"] is False
    assert task["StartTime"] and task["CompleteTime"]
    assert task["Tags"] == [{"Key": "restarter:restart", "Value": "rst_1"}]
    # and the instance's root device now holds a new volume made from the snapshot
    new_root = root_volume_id(ec2, instance_id)
    assert new_root != old_root
    [new_volume] = ec2.describe_volumes(VolumeIds=[new_root])["Volumes"]
    assert (new_volume["SnapshotId"], new_volume["Size"], new_volume["State"]) == (snapshot_id, 50, "in-use")
    assert new_volume["Attachments"][0]["InstanceId"] == instance_id
    assert new_volume["Attachments"][0]["Device"] == "/dev/sda1"
    # and the old root is kept, detached
    [old_volume] = ec2.describe_volumes(VolumeIds=[old_root])["Volumes"]
    assert (old_volume["State"], old_volume["Attachments"]) == ("available", [])


def test_replace_root_volume_can_delete_the_replaced_volume(state: SimulatedAgentState, ec2: Any) -> None:
    # given a stopped instance and a root snapshot
    [instance_id] = launch(ec2)
    old_root = root_volume_id(ec2, instance_id)
    snapshot_id = _snapshots_by_volume(ec2, instance_id)[old_root]
    ec2.stop_instances(InstanceIds=[instance_id])
    # when the root is replaced with DeleteReplacedRootVolume
    ec2.create_replace_root_volume_task(InstanceId=instance_id, SnapshotId=snapshot_id, DeleteReplacedRootVolume=True)
    # then the old volume is gone
    with pytest.raises(ClientError) as exc:
        ec2.describe_volumes(VolumeIds=[old_root])
    assert error_of(exc)[0] == "InvalidVolume.NotFound"


def test_replace_root_volume_validates_its_inputs(state: SimulatedAgentState, ec2: Any) -> None:
    # given an instance with a data volume snapshot, and a terminated instance
    [instance_id] = launch(ec2)
    snapshots = _snapshots_by_volume(ec2, instance_id)
    data_snapshot = next(s for v, s in snapshots.items() if v != root_volume_id(ec2, instance_id))
    [gone] = launch(ec2)
    ec2.terminate_instances(InstanceIds=[gone])
    # when replacing from a non-root snapshot, an unknown snapshot, or on a terminated instance
    with pytest.raises(ClientError) as not_root:
        ec2.create_replace_root_volume_task(InstanceId=instance_id, SnapshotId=data_snapshot)
    with pytest.raises(ClientError) as missing:
        ec2.create_replace_root_volume_task(InstanceId=instance_id, SnapshotId="snap-0123456789abcdef0")
    with pytest.raises(ClientError) as terminated:
        ec2.create_replace_root_volume_task(InstanceId=gone)
    # then each is refused
    assert error_of(not_root)[0] == "InvalidParameterValue"
    assert error_of(missing)[0] == "InvalidSnapshot.NotFound"
    assert error_of(terminated)[0] == "IncorrectInstanceState"


def test_replace_root_volume_without_snapshot_restores_launch_state(state: SimulatedAgentState, ec2: Any) -> None:
    # given a running instance
    [instance_id] = launch(ec2)
    old_root = root_volume_id(ec2, instance_id)
    # when the root is replaced with no snapshot
    task = ec2.create_replace_root_volume_task(InstanceId=instance_id)["ReplaceRootVolumeTask"]
    # then a fresh volume of the same size is the root
    assert "SnapshotId" not in task
    [volume] = ec2.describe_volumes(VolumeIds=[root_volume_id(ec2, instance_id)])["Volumes"]
    assert volume["VolumeId"] != old_root
    assert volume["Size"] == 50


def test_describe_replace_root_volume_tasks(state: SimulatedAgentState, ec2: Any) -> None:
    # given tasks on two instances
    first, second = launch(ec2, count=2)
    task_one = ec2.create_replace_root_volume_task(InstanceId=first)["ReplaceRootVolumeTask"]
    task_two = ec2.create_replace_root_volume_task(InstanceId=second)["ReplaceRootVolumeTask"]
    # when they are described by id, by instance filter and all together
    by_id = ec2.describe_replace_root_volume_tasks(ReplaceRootVolumeTaskIds=[task_two["ReplaceRootVolumeTaskId"]])
    by_instance = ec2.describe_replace_root_volume_tasks(Filters=[{"Name": "instance-id", "Values": [first]}])
    everything = ec2.describe_replace_root_volume_tasks()
    # then each selects the right ones
    assert by_id["ReplaceRootVolumeTasks"] == [task_two]
    assert by_instance["ReplaceRootVolumeTasks"] == [task_one]
    assert {t["ReplaceRootVolumeTaskId"] for t in everything["ReplaceRootVolumeTasks"]} == {
        task_one["ReplaceRootVolumeTaskId"],
        task_two["ReplaceRootVolumeTaskId"],
    }


# -- moto 5.2.5 behaviour the product relies on -------------------------------------------------


def test_create_snapshots_returns_one_snapshot_per_volume_with_copied_tags(
    state: SimulatedAgentState, ec2: Any
) -> None:
    # given an instance with two volumes tagged with their cluster
    [instance_id] = launch(ec2)
    volume_ids = [v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]]
    ec2.create_tags(Resources=volume_ids, Tags=[{"Key": "restarter:cluster", "Value": "cluster_1"}])
    # when a multi-volume snapshot set is created copying the volume tags
    snapshots = ec2.create_snapshots(
        InstanceSpecification={"InstanceId": instance_id, "ExcludeBootVolume": False},
        CopyTagsFromSource="volume",
        TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": "restarter:checkpoint", "Value": "c1"}]}],
    )["Snapshots"]
    # then there is one snapshot per volume, with the volume's and the requested tags
    assert sorted(s["VolumeId"] for s in snapshots) == sorted(volume_ids)
    for snapshot in snapshots:
        tags = {t["Key"]: t["Value"] for t in snapshot["Tags"]}
        assert tags == {"restarter:cluster": "cluster_1", "restarter:checkpoint": "c1"}


def test_modify_volume_reports_a_modification_and_snapshots_keep_their_size(
    state: SimulatedAgentState, ec2: Any
) -> None:
    # given a root volume with a snapshot
    [instance_id] = launch(ec2)
    volume_id = root_volume_id(ec2, instance_id)
    snapshot_id = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    # when the volume grows
    modification = ec2.modify_volume(VolumeId=volume_id, Size=200)["VolumeModification"]
    # then the modification is reported and the volume has the new size
    # (moto answers "completed" at once where AWS says "modifying"; its transformer misses the key)
    assert modification["ModificationState"] in ("modifying", "completed")
    [described] = ec2.describe_volumes_modifications(VolumeIds=[volume_id])["VolumesModifications"]
    assert (described["OriginalSize"], described["TargetSize"]) == (50, 200)
    assert described["ModificationState"] in ("modifying", "optimizing", "completed")
    assert ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Size"] == 200
    # and the earlier snapshot still has the size it was taken at (moto reads the live volume)
    assert ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["VolumeSize"] == 50


def test_force_stop_and_instance_type_change(state: SimulatedAgentState, ec2: Any) -> None:
    # given a running p5 instance
    [instance_id] = launch(ec2, "p5.48xlarge")
    # when it is force-stopped and its type changed
    stopping = ec2.stop_instances(InstanceIds=[instance_id], Force=True)["StoppingInstances"][0]
    ec2.modify_instance_attribute(InstanceId=instance_id, InstanceType={"Value": "p4d.24xlarge"})
    # then it is stopped with the new type
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    assert stopping["PreviousState"]["Name"] == "running"
    assert (instance["State"]["Name"], instance["InstanceType"]) == ("stopped", "p4d.24xlarge")


def test_instance_types_carry_gpu_info(state: SimulatedAgentState, ec2: Any) -> None:
    # when the p5 type is described
    [p5] = ec2.describe_instance_types(InstanceTypes=["p5.48xlarge"])["InstanceTypes"]
    # then it has 8 H100 GPUs of 80 GiB
    [gpu] = p5["GpuInfo"]["Gpus"]
    assert (gpu["Manufacturer"], gpu["Name"], gpu["Count"], gpu["MemoryInfo"]["SizeInMiB"]) == (
        "NVIDIA",
        "H100",
        8,
        81920,
    )


# -- data and state -----------------------------------------------------------------------------


def test_gpu_names_match_the_real_captures() -> None:
    # given the `nvidia-smi -L` line of the H100 capture and the A100 XML product name
    capture = H100_CAPTURE.read_text(encoding="utf-8").splitlines()
    listed = next(line for line in capture if line.startswith("GPU 0: "))
    product = A100_XML.read_text(encoding="utf-8").split("<product_name>")[1].split("</product_name>")[0]
    # then the names the agent prints are those
    assert listed.startswith(f"GPU 0: {NVIDIA_SMI_NAMES[('H100', None)]} (UUID: GPU-")
    assert product == NVIDIA_SMI_NAMES[("A100", 81920)]


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="shared sample data not present")
def test_data_files_are_unedited_copies_of_the_shared_samples() -> None:
    copies = [p for p in DATA_DIR.rglob("*") if p.is_file() and p.name != "PROVENANCE.md"]
    assert copies
    for copy in copies:
        assert copy.read_bytes() == (SHARED_DATA / copy.relative_to(DATA_DIR)).read_bytes(), copy


def test_reset_forgets_everything() -> None:
    # given a state with every kind of fault and record
    fleet = SimulatedAgentState()
    fleet.throttle("ec2", "RebootInstances", 3)
    fleet.record_call("ec2", "RebootInstances")
    fleet.set_never_healthy("i-1")
    fleet.set_agent_offline("i-1")
    fleet.fail_command("i-1", "health_check")
    fleet.inject_xid("i-1")
    fleet.close_port("i-1", 8080)
    fleet.start_container("i-1", IMAGE, PORTS)
    # when it is reset
    fleet.reset()
    # then nothing is left
    assert fleet.record_call("ec2", "RebootInstances") is None
    assert fleet.throttled_calls == {}
    assert fleet.containers == {}
    assert not fleet.is_never_healthy("i-1")
    assert not fleet.is_agent_offline("i-1")
    assert fleet.take_command_fault("i-1", "health_check") is None
    assert fleet.xid_lines("i-1") == []
    assert not fleet.is_port_closed("i-1", 8080)
