"""Every public method of `Ec2Provider` against the real EC2 and SSM models (botocore Stubber).

Each test queues the exact request the adapter must send and the answer AWS gives (the shapes of
AWS's documented examples), calls the method, and checks what it makes of the answer. A request
the model refuses, or an answer outside the output shape, fails the test before the adapter sees it.
"""

from __future__ import annotations

from typing import Any

import pytest
from botocore.stub import ANY

from restarter.domain.inventory import CommandInvocation, InstanceTypeInfo, InstanceView, SnapshotView, VolumeView
from tests.contract import conftest as shapes
from tests.contract.conftest import COMMAND_ID, PARAMETER, Stubbed, model_violations

IDS = ["i-0a1b2c3d4e5f60001", "i-0a1b2c3d4e5f60002"]
ROOT_AND_DATA = [
    shapes.volume("vol-0aaaaaaaaaaaaaaaa", IDS[0], "/dev/sda1", 200),
    shapes.volume("vol-0bbbbbbbbbbbbbbbb", IDS[0], "/dev/sdf", 1000),
]


# ------------------------------------------------------------------ inventory


def test_describe_instances_joins_status_checks_in_the_order_asked(stubbed: Stubbed) -> None:
    # given: EC2 lists the instances in its own order; the stopped one has no status checks
    stopped = shapes.instance(
        IDS[1], state="stopped", index=1, Tags=shapes.tags({"restarter:cluster": "cluster_abc123"})
    )
    stubbed.ec2.add_response(
        "describe_instances",
        shapes.reservations(stopped, shapes.instance(IDS[0])),
        expected_params={"InstanceIds": IDS},
    )
    stubbed.ec2.add_response(
        "describe_instance_status",
        {"InstanceStatuses": [shapes.instance_status(IDS[0], "ok", "ok")]},
        expected_params={"InstanceIds": IDS, "IncludeAllInstances": True},
    )
    # when
    views = stubbed.provider.describe_instances(IDS)
    # then
    cluster_tag = {"restarter:cluster": "cluster_abc123"}
    assert views == [
        InstanceView(
            IDS[0], "running", "p4d.24xlarge", "ok", "ok", "ec2-54-0-0-10.compute-1.amazonaws.com", "10.0.1.10"
        ),
        InstanceView(IDS[1], "stopped", "p4d.24xlarge", public_dns=None, private_ip="10.0.1.11", tags=cluster_tag),
    ]
    assert views[0].status_checks_ok and not views[1].status_checks_ok
    stubbed.assert_no_pending_responses()


def test_describe_volumes_finds_each_root_by_the_instance_root_device(stubbed: Stubbed) -> None:
    # given
    stubbed.ec2.add_response(
        "describe_instances", shapes.reservations(shapes.instance(IDS[0])), expected_params={"InstanceIds": IDS[:1]}
    )
    stubbed.ec2.add_response(
        "describe_volumes",
        {"Volumes": ROOT_AND_DATA[::-1]},
        expected_params={"Filters": [{"Name": "attachment.instance-id", "Values": IDS[:1]}]},
    )
    # when
    views = stubbed.provider.describe_volumes(IDS[:1])
    # then
    assert views == [
        VolumeView("vol-0aaaaaaaaaaaaaaaa", IDS[0], "/dev/sda1", 200, is_root=True),
        VolumeView("vol-0bbbbbbbbbbbbbbbb", IDS[0], "/dev/sdf", 1000, is_root=False),
    ]
    stubbed.assert_no_pending_responses()


def test_describe_instance_type_reads_gpus_and_memory(stubbed: Stubbed) -> None:
    # given: p4d.24xlarge as EC2 describes it (8 x A100 40 GB, 1152 GiB)
    stubbed.ec2.add_response(
        "describe_instance_types",
        {"InstanceTypes": [shapes.gpu_type("p4d.24xlarge", 96, 1179648, 8, "A100", 40960)]},
        expected_params={"InstanceTypes": ["p4d.24xlarge"]},
    )
    # when
    info = stubbed.provider.describe_instance_type("p4d.24xlarge")
    # then
    assert info == InstanceTypeInfo("p4d.24xlarge", vcpus=96, memory_gb=1152, gpu_count=8, gpu_name="A100",
                                    gpu_manufacturer="NVIDIA")  # fmt: skip
    stubbed.assert_no_pending_responses()


def test_instance_types_in_family_follows_next_token(stubbed: Stubbed) -> None:
    # given: two pages
    family_filter = [{"Name": "instance-type", "Values": ["g5.*"]}]
    stubbed.ec2.add_response(
        "describe_instance_types",
        {"InstanceTypes": [shapes.gpu_type("g5.xlarge", 4, 16384, 1, "A10G", 24576)], "NextToken": "page-2"},
        expected_params={"Filters": family_filter},
    )
    stubbed.ec2.add_response(
        "describe_instance_types",
        {"InstanceTypes": [shapes.gpu_type("g5.48xlarge", 192, 786432, 8, "A10G", 24576)]},
        expected_params={"Filters": family_filter, "NextToken": "page-2"},
    )
    # when
    found = stubbed.provider.instance_types_in_family("g5")
    # then
    expected = [("g5.xlarge", 4, 16, 1), ("g5.48xlarge", 192, 768, 8)]
    assert [(t.name, t.vcpus, t.memory_gb, t.gpu_count) for t in found] == expected
    stubbed.assert_no_pending_responses()


# ------------------------------------------------------------------ power


def test_power_calls_send_what_ec2_accepts(stubbed: Stubbed) -> None:
    # given: RebootInstances and ModifyInstanceAttribute answer nothing but the request id
    stubbed.ec2.add_response("reboot_instances", {}, expected_params={"InstanceIds": IDS})
    stubbed.ec2.add_response(
        "stop_instances",
        {"StoppingInstances": [shapes.transition(i, (16, "running"), (64, "stopping")) for i in IDS]},
        expected_params={"InstanceIds": IDS, "Force": True},
    )
    stubbed.ec2.add_response(
        "modify_instance_attribute",
        {},
        expected_params={"InstanceId": IDS[0], "InstanceType": {"Value": "p4de.24xlarge"}},
    )
    stubbed.ec2.add_response(
        "start_instances",
        {"StartingInstances": [shapes.transition(i, (80, "stopped"), (0, "pending")) for i in IDS]},
        expected_params={"InstanceIds": IDS},
    )
    # when
    provider = stubbed.provider
    results = [provider.reboot(IDS), provider.stop(IDS, force=True)]
    results += [provider.modify_instance_type(IDS[0], "p4de.24xlarge"), provider.start(IDS)]
    # then
    assert results == [None, None, None, None]
    sent = [name for name, _ in stubbed.sent]
    assert sent == ["RebootInstances", "StopInstances", "ModifyInstanceAttribute", "StartInstances"]
    stubbed.assert_no_pending_responses()


# ------------------------------------------------------------------ storage


def test_create_checkpoint_snapshots_every_volume_of_each_instance(stubbed: Stubbed) -> None:
    # given
    checkpoint = {"restarter:checkpoint": "ckpt_20240115", "restarter:cluster": "cluster_abc123"}
    stubbed.ec2.add_response(
        "describe_instances", shapes.reservations(shapes.instance(IDS[0])), expected_params={"InstanceIds": IDS[:1]}
    )
    stubbed.ec2.add_response(
        "describe_volumes",
        {"Volumes": ROOT_AND_DATA},
        expected_params={"Filters": [{"Name": "attachment.instance-id", "Values": IDS[:1]}]},
    )
    stubbed.ec2.add_response(
        "create_snapshots",
        {
            "Snapshots": [
                shapes.snapshot("snap-0aaaaaaaaaaaaaaaa", "vol-0aaaaaaaaaaaaaaaa", 200, "pending", checkpoint),
                shapes.snapshot("snap-0bbbbbbbbbbbbbbbb", "vol-0bbbbbbbbbbbbbbbb", 1000, "pending", checkpoint),
            ]
        },
        expected_params={
            "InstanceSpecification": {"InstanceId": IDS[0], "ExcludeBootVolume": False},
            "Description": "restarter checkpoint ckpt_20240115",
            "TagSpecifications": [{"ResourceType": "snapshot", "Tags": shapes.tags(checkpoint)}],
            "CopyTagsFromSource": "volume",
        },
    )
    # when
    made = stubbed.provider.create_checkpoint(IDS[:1], checkpoint)
    # then
    assert made == {IDS[0]: {"/dev/sda1": "snap-0aaaaaaaaaaaaaaaa", "/dev/sdf": "snap-0bbbbbbbbbbbbbbbb"}}
    stubbed.assert_no_pending_responses()


def test_snapshot_states_and_descriptions(stubbed: Stubbed) -> None:
    # given: the same two snapshots asked by id, then through a filter
    snaps = [
        shapes.snapshot(
            "snap-0aaaaaaaaaaaaaaaa", "vol-0aaaaaaaaaaaaaaaa", 200, "completed", {"restarter:checkpoint": "c1"}
        ),
        shapes.snapshot("snap-0bbbbbbbbbbbbbbbb", "vol-0bbbbbbbbbbbbbbbb", 1000, "pending", {}),
    ]
    ids = [s["SnapshotId"] for s in snaps]
    stubbed.ec2.add_response("describe_snapshots", {"Snapshots": snaps}, expected_params={"SnapshotIds": ids})
    stubbed.ec2.add_response(
        "describe_snapshots",
        {"Snapshots": snaps[:1]},
        expected_params={"Filters": [{"Name": "snapshot-id", "Values": [*ids, "snap-0deadbeefdeadbeef"]}]},
    )
    # when
    states = stubbed.provider.snapshot_states(ids)
    views = stubbed.provider.describe_snapshots([*ids, "snap-0deadbeefdeadbeef"])
    # then
    assert states == {"snap-0aaaaaaaaaaaaaaaa": "completed", "snap-0bbbbbbbbbbbbbbbb": "pending"}
    assert views == [
        SnapshotView(
            "snap-0aaaaaaaaaaaaaaaa", "completed", {"restarter:cluster": "cluster_abc123", "restarter:checkpoint": "c1"}
        )
    ]
    stubbed.assert_no_pending_responses()


def test_grow_volume_and_its_modification_states(stubbed: Stubbed) -> None:
    # given: one modification still optimizing, one whose record has no state (read as completed)
    stubbed.ec2.add_response(
        "modify_volume",
        {"VolumeModification": shapes.modification("vol-0aaaaaaaaaaaaaaaa", "modifying")},
        expected_params={"VolumeId": "vol-0aaaaaaaaaaaaaaaa", "Size": 400},
    )
    stubbed.ec2.add_response(
        "describe_volumes_modifications",
        {
            "VolumesModifications": [
                shapes.modification("vol-0aaaaaaaaaaaaaaaa", "optimizing"),
                shapes.modification("vol-0bbbbbbbbbbbbbbbb", None),
            ]
        },
        expected_params={"VolumeIds": ["vol-0aaaaaaaaaaaaaaaa", "vol-0bbbbbbbbbbbbbbbb"]},
    )
    # when
    grown = stubbed.provider.grow_volume("vol-0aaaaaaaaaaaaaaaa", 400)
    states = stubbed.provider.volume_modification_states(["vol-0aaaaaaaaaaaaaaaa", "vol-0bbbbbbbbbbbbbbbb"])
    # then
    assert grown is None
    assert states == {"vol-0aaaaaaaaaaaaaaaa": "optimizing", "vol-0bbbbbbbbbbbbbbbb": "completed"}
    stubbed.assert_no_pending_responses()


def test_replace_root_volume_keeps_the_old_volume_and_reads_task_states(stubbed: Stubbed) -> None:
    # given
    task = {
        "ReplaceRootVolumeTaskId": "replacevol-0123456789abcdef0",
        "InstanceId": IDS[0],
        "TaskState": "pending",
        "StartTime": "2024-01-15T02:00:05.000Z",
        "Tags": [],
        "SnapshotId": "snap-0aaaaaaaaaaaaaaaa",
        "DeleteReplacedRootVolume": False,
    }
    stubbed.ec2.add_response(
        "create_replace_root_volume_task",
        {"ReplaceRootVolumeTask": task},
        expected_params={
            "InstanceId": IDS[0],
            "SnapshotId": "snap-0aaaaaaaaaaaaaaaa",
            "DeleteReplacedRootVolume": False,
        },
    )
    stubbed.ec2.add_response(
        "describe_replace_root_volume_tasks",
        {"ReplaceRootVolumeTasks": [{**task, "TaskState": "succeeded", "CompleteTime": "2024-01-15T02:01:40.000Z"}]},
        expected_params={"ReplaceRootVolumeTaskIds": ["replacevol-0123456789abcdef0"]},
    )
    # when
    task_id = stubbed.provider.replace_root_volume(IDS[0], "snap-0aaaaaaaaaaaaaaaa")
    states = stubbed.provider.replace_root_volume_states(IDS[0], [task_id])
    # then
    assert task_id == "replacevol-0123456789abcdef0"
    assert states == {"replacevol-0123456789abcdef0": "succeeded"}
    stubbed.assert_no_pending_responses()


# ------------------------------------------------------------------ commands

PORTS = [{"internal_port": 8888, "external_port": 30888, "protocol": "tcp"}]
OPS: dict[str, dict[str, Any]] = {
    "stop_services": {"grace_seconds": 300},
    "start_services": {"image": "tensorone/pytorch:2.1-cuda12.1", "ports": PORTS, "environment_parameter": PARAMETER},
    "health_check": {"ports": [*PORTS, {"internal_port": 6006, "external_port": 30006, "protocol": "udp"}]},
    "reset_gpu": {},
}


@pytest.mark.parametrize(("op", "timeout", "sent_timeout"), [(op, 600, 600) for op in OPS] + [("reset_gpu", 10, 30)])
def test_run_command_sends_a_shell_script_ssm_accepts(
    stubbed: Stubbed, op: str, timeout: int, sent_timeout: int
) -> None:
    # given: SSM refuses a TimeoutSeconds under 30
    expected: dict[str, Any] = {"InstanceIds": IDS, "DocumentName": "AWS-RunShellScript", "Comment": f"restarter {op}"}
    answer = shapes.send_command_answer("AWS-RunShellScript", IDS, {"commands": ["..."]})
    expected.update(TimeoutSeconds=sent_timeout, Parameters=ANY)
    stubbed.ssm.add_response("send_command", answer, expected_params=expected)
    # when
    command_id = stubbed.provider.run_command(IDS, op, OPS[op], timeout)
    # then: the script names its op first; the execution timeout is a string, as the document wants
    assert command_id == COMMAND_ID
    (sent,) = stubbed.params("SendCommand")
    commands = sent["Parameters"]["commands"]
    assert commands[0] == f"# restarter-op: {op}"
    assert all(isinstance(line, str) and line for line in commands)
    assert sent["Parameters"]["executionTimeout"] == [str(sent_timeout)]
    assert set(sent["Parameters"]) == {"commands", "executionTimeout"}
    # environment values never travel in a command: the script reads the SecureString by name
    reads_parameter = f"aws ssm get-parameter --with-decryption --name {PARAMETER}" in "\n".join(commands)
    assert reads_parameter == (op == "start_services")
    stubbed.assert_no_pending_responses()


def test_a_cluster_of_more_than_50_instances_is_one_command_per_50(stubbed: Stubbed) -> None:
    # given: SendCommand takes at most 50 InstanceIds, so 51 instances are two commands
    many = [f"i-0a1b2c3d4e5f6{n:04d}" for n in range(51)]
    second = "0b6e1f2a-4c9d-4e7a-8b1f-2d3e4f5a6b7c"
    sent = {"DocumentName": "AWS-RunShellScript", "Comment": "restarter reset_gpu", "TimeoutSeconds": 300}
    for chunk, command_id in ((many[:50], COMMAND_ID), (many[50:], second)):
        answer = shapes.send_command_answer("AWS-RunShellScript", chunk, {}, command_id)
        stubbed.ssm.add_response(
            "send_command", answer, expected_params={**sent, "InstanceIds": chunk, "Parameters": ANY}
        )
    owners = [COMMAND_ID] * 50 + [second]
    for instance_id, command_id in zip(many, owners, strict=True):
        stubbed.ssm.add_response(
            "get_command_invocation",
            shapes.invocation(instance_id, "Success", 0, "reset"),
            expected_params={"CommandId": command_id, "InstanceId": instance_id},
        )
    # when
    command_id = stubbed.provider.run_command(many, "reset_gpu", {}, 300)
    invocations = stubbed.provider.command_invocations(command_id, many)
    # then: one id naming both commands; each instance read from the command that has it
    assert command_id == f"{COMMAND_ID}+{second}"
    assert [i.instance_id for i in invocations] == many and {i.status for i in invocations} == {"Success"}
    stubbed.assert_no_pending_responses()


def test_run_patch_baseline_installs_without_reboot(stubbed: Stubbed) -> None:
    # given
    parameters = {"Operation": ["Install"], "RebootOption": ["NoReboot"]}
    stubbed.ssm.add_response(
        "send_command",
        shapes.send_command_answer("AWS-RunPatchBaseline", IDS, parameters),
        expected_params={
            "InstanceIds": IDS,
            "DocumentName": "AWS-RunPatchBaseline",
            "Comment": "restarter apply_system_updates",
            "Parameters": parameters,
        },
    )
    # when / then
    assert stubbed.provider.run_patch_baseline(IDS) == COMMAND_ID
    stubbed.assert_no_pending_responses()


def test_command_invocations_one_per_instance(stubbed: Stubbed) -> None:
    # given: one instance done, one still running (SSM answers ResponseCode -1 then)
    stubbed.ssm.add_response(
        "get_command_invocation",
        shapes.invocation(IDS[0], "Success", 0, "restarter-health: 2\n### end\n"),
        expected_params={"CommandId": COMMAND_ID, "InstanceId": IDS[0]},
    )
    stubbed.ssm.add_response(
        "get_command_invocation",
        shapes.invocation(IDS[1], "InProgress", -1, ""),
        expected_params={"CommandId": COMMAND_ID, "InstanceId": IDS[1]},
    )
    # when
    invocations = stubbed.provider.command_invocations(COMMAND_ID, IDS)
    # then
    assert invocations == [
        CommandInvocation(IDS[0], "Success", 0, "restarter-health: 2\n### end\n", ""),
        CommandInvocation(IDS[1], "InProgress", -1, "", ""),
    ]
    assert [i.pending for i in invocations] == [False, True]
    stubbed.assert_no_pending_responses()


def test_agents_online_reads_ping_status(stubbed: Stubbed) -> None:
    # given: one agent online, one lost, the third instance not a managed node (absent)
    asked = [*IDS, "i-0a1b2c3d4e5f60003"]

    filters = [{"Key": "InstanceIds", "Values": asked}]
    stubbed.ssm.add_response(
        "describe_instance_information",
        {"InstanceInformationList": [shapes.instance_information(IDS[0], "Online")], "NextToken": "page-2"},
        expected_params={"Filters": filters, "MaxResults": 50},
    )
    stubbed.ssm.add_response(  # the second page: the answer is read to the end
        "describe_instance_information",
        {"InstanceInformationList": [shapes.instance_information(IDS[1], "ConnectionLost")]},
        expected_params={"Filters": filters, "MaxResults": 50, "NextToken": "page-2"},
    )
    # when / then
    assert stubbed.provider.agents_online(asked) == {IDS[0]: True, IDS[1]: False, "i-0a1b2c3d4e5f60003": False}
    stubbed.assert_no_pending_responses()


# ------------------------------------------------------------------ environment


def test_environment_round_trip_through_a_secure_string(stubbed: Stubbed) -> None:
    # given
    values = {"MODEL_VERSION": "v1.0", "HF_TOKEN": "hf_secret_value_never_logged"}
    stubbed.ssm.add_response(
        "put_parameter",
        {"Version": 3, "Tier": "Standard"},
        expected_params={
            "Name": PARAMETER,
            "Value": '{"HF_TOKEN": "hf_secret_value_never_logged", "MODEL_VERSION": "v1.0"}',
            "Type": "SecureString",
            "Overwrite": True,
            "Tier": "Intelligent-Tiering",
        },
    )
    stubbed.ssm.add_response(
        "get_parameter", shapes.parameter_answer(values, 3), expected_params={"Name": PARAMETER, "WithDecryption": True}
    )
    stubbed.ssm.add_response(
        "get_parameter",
        shapes.parameter_answer({"MODEL_VERSION": "v0.9"}, 2, selector=":2"),
        expected_params={"Name": f"{PARAMETER}:2", "WithDecryption": True},
    )
    stubbed.ssm.add_response("delete_parameter", {}, expected_params={"Name": PARAMETER})
    # when
    version = stubbed.provider.put_environment(PARAMETER, values)
    latest = stubbed.provider.get_environment(PARAMETER)
    older = stubbed.provider.get_environment(PARAMETER, version=2)
    deleted = stubbed.provider.delete_environment(PARAMETER)
    # then
    assert (version, latest, older, deleted) == (3, values, {"MODEL_VERSION": "v0.9"}, None)
    stubbed.assert_no_pending_responses()


def test_the_model_checks_catch_what_botocore_lets_through(stubbed: Stubbed) -> None:
    # given: a SendCommand and a PutParameter that botocore's validation passes
    ssm = stubbed.ssm.client.meta.service_model
    send_shape, put_shape = (
        ssm.operation_model("SendCommand").input_shape,
        ssm.operation_model("PutParameter").input_shape,
    )
    assert send_shape is not None and put_shape is not None
    send = {"InstanceIds": ["i-1"], "DocumentName": "AWS RunShellScript", "Comment": "x" * 101, "TimeoutSeconds": 30}
    put = {"Name": PARAMETER, "Value": "{}", "Tier": "Cheap"}
    # when
    problems = [
        *model_violations(send, send_shape),
        *model_violations(put, put_shape),
    ]
    # then: the pattern of the ids and of the name, the comment's maximum, the tier's enum
    assert [p.split(":")[0] for p in problems] == ["InstanceIds[0]", "DocumentName", "Comment", "Tier"]
