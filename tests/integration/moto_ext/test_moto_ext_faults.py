"""Installing the moto extensions and their faults: idempotent install, moto as shipped without a
state, throttling, never-healthy instances, DescribeInstanceInformation, the data files and reset.

Every test drives moto through boto3 inside ``mock_aws()`` after ``install_extensions(state)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from moto.core.responses import BaseResponse

from restarter_local.moto_ext import (
    SimulatedAgentState,
    install_extensions,
    set_active_state,
)
from restarter_local.moto_ext.data import A100_XML, DATA_DIR, H100_CAPTURE, NVIDIA_SMI_NAMES
from tests.integration.moto_ext.harness import (
    IMAGE,
    PORTS,
    error_of,
    invocation,
    launch,
    run,
    send,
)

SHARED_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"


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
