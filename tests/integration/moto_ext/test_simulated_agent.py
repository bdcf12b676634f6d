"""The simulated SSM agent running our ops: health checks (GPUs, ports, XID lines), the container's
start/stop cycle, failed and faulted commands, offline agents, markers and invocation details.

Every test drives moto through boto3 inside ``mock_aws()`` after ``install_extensions(state)``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from restarter_local.moto_ext import (
    SimulatedAgentState,
    default_fatal_xid_line,
    xid_line,
)
from tests.integration.moto_ext.harness import (
    IMAGE,
    PORTS,
    error_of,
    health,
    invocation,
    launch,
    run,
    script,
    send,
)

# -- the simulated agent: our ops ---------------------------------------------------------------


def _section(report: str, name: str) -> tuple[int, list[str]]:
    """(rc, body lines) of one `### section <name> rc=<rc>` of a health report."""
    lines = report.splitlines()
    [start] = [i for i, line in enumerate(lines) if line.startswith(f"### section {name} rc=")]
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("###"))
    return int(lines[start].rsplit("rc=", 1)[1]), lines[start + 1 : end]


def _listed(report: str) -> list[str]:
    """The `nvidia-smi -L` view of the gpus section: `GPU <index>: <name> (UUID: <uuid>)`."""
    rows = [line.split(", ") for line in _section(report, "gpus")[1]]
    return [f"GPU {row[0]}: {row[3]} (UUID: {row[2]})" for row in rows]


def test_health_check_reports_gpus_from_the_instance_type(state: SimulatedAgentState, ec2: Any, ssm: Any) -> None:
    # given instances of three types
    [p5] = launch(ec2, "p5.48xlarge")
    [g5] = launch(ec2, "g5.xlarge")
    [cpu] = launch(ec2, "t3.micro")
    # when each runs the health check
    p5_report, g5_report, cpu_report = health(ssm, p5), health(ssm, g5), health(ssm, cpu)
    # then the gpus section lists the type's GPUs, one CSV row each
    assert p5_report.startswith("restarter-health: 2\n### section gpus rc=0\n")
    p5_gpus = _listed(p5_report)
    assert [line.split(" (UUID")[0] for line in p5_gpus] == [f"GPU {i}: NVIDIA H100 80GB HBM3" for i in range(8)]
    assert all("(UUID: GPU-" in line for line in p5_gpus)
    assert len({line.split("UUID: ")[1] for line in p5_gpus}) == 8
    [g5_gpu] = _listed(g5_report)
    assert g5_gpu.startswith("GPU 0: NVIDIA A10G (UUID: GPU-")
    # and an instance without GPUs has no nvidia-smi
    assert _section(cpu_report, "gpus") == (127, ["nvidia-smi: command not found"])
    # and the UUIDs are stable between checks
    assert _listed(health(ssm, p5)) == p5_gpus


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
    assert _section(before, "workload") == (0, ["container: missing", "port: tcp/80 closed"])

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
    # and the health check shows it running with the port open, a process on every GPU
    running = health(ssm, instance_id)
    assert _section(running, "workload") == (0, [f"container: running {IMAGE}", "port: tcp/80 open"])
    assert len(_section(running, "processes")[1]) == 8

    # when the services stop
    stopped = run(ssm, instance_id, "stop_services", {"grace_seconds": 30})
    # then docker's name line and the summary are printed and the container is exited
    assert stopped["Status"] == "Success"
    assert stopped["StandardOutputContent"] == "restarter-workload\nstopped services within 30s\n"
    assert state.containers[instance_id]["running"] is False
    stopped_report = health(ssm, instance_id)
    assert _section(stopped_report, "workload") == (0, [f"container: exited {IMAGE}", "port: tcp/80 closed"])
    assert _section(stopped_report, "processes") == (0, [])


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
    assert _section(report, "workload")[1][-2:] == ["port: tcp/80 closed", "port: tcp/9090 closed"]
    # and re-opening the port opens it
    state.open_port(instance_id, 8080)
    assert "port: tcp/80 open" in _section(health(ssm, instance_id), "workload")[1]


def test_health_check_reports_injected_xid_lines(state: SimulatedAgentState, ec2: Any, ssm: Any) -> None:
    # given a default fatal Xid and a chosen one injected
    [instance_id] = launch(ec2)
    state.inject_xid(instance_id)
    state.inject_xid(instance_id, xid_line(119))
    # when the health check runs
    report = health(ssm, instance_id)
    # then the kernel section has the lines, the default being a real Xid 79 line
    assert _section(report, "kernel") == (0, [default_fatal_xid_line(), xid_line(119)])
    assert "NVRM: Xid (PCI:0000:91:00): 79," in default_fatal_xid_line()
    assert "GPU has fallen off the bus" in default_fatal_xid_line()
    # and clearing removes them
    state.clear_xid(instance_id)
    assert _section(health(ssm, instance_id), "kernel") == (0, [])


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
    assert good_plugin["Output"].startswith("restarter-health: 2\n### section gpus rc=0\n0, 00000000:10:1C.0, GPU-")
    assert (by_id[bad]["Status"], bad_plugin["ResponseCode"]) == ("Failed", 1)
    assert bad_plugin["Output"] == "\n----------ERROR-------\nboom\n"
    # and without details, or filtered by instance, the shape follows the API
    plain = ssm.list_command_invocations(CommandId=command_id)["CommandInvocations"]
    assert all(inv["CommandPlugins"] == [] for inv in plain)
    only = ssm.list_command_invocations(CommandId=command_id, InstanceId=bad)["CommandInvocations"]
    assert [inv["InstanceId"] for inv in only] == [bad]
