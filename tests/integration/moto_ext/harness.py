"""What the tests of the moto extensions drive moto with: launching GPU instances and sending the
simulated agent our ops over SSM, reading the answers and errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

REGION = "us-east-1"
AMI = "ami-12c6146b"  # one of moto's default AMIs
NO_RETRIES = Config(retries={"total_max_attempts": 1})
PORTS = [{"internal_port": 8080, "external_port": 80, "protocol": "tcp"}]
IMAGE = "nvcr.io/nvidia/pytorch:24.01-py3"


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
