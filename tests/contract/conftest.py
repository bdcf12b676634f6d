"""Contract tests: the adapters' calls checked against botocore's models of the real services,
offline. moto accepts request shapes AWS refuses, so here every call goes to a real boto3 client
whose `Stubber` answers instead of the network: botocore validates each request against the
service model before the stub answers, and the stub validates each canned response against the
operation's output shape. Nothing here starts moto.

botocore's own validation checks required members, types and minimums only; the services also
enforce the maximums, enums and patterns their models declare, so `model_violations` checks
those too, on every request these clients build.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.model import OperationModel, Shape
from botocore.stub import Stubber

from restarter.adapters.clients import PROVIDER_CLIENT_CONFIG
from restarter.adapters.ec2_provider import Ec2Provider

try:  # the models' patterns are Java regexes (\p{L}); `regex` reads them, `re` only some
    import regex as _regex
except ImportError:  # pragma: no cover - `regex` comes with the dev tools
    _regex = re  # type: ignore[assignment,unused-ignore]

REGION = "us-east-1"
ACCOUNT = "123456789012"
WHEN = datetime(2024, 1, 15, 2, 0, 5, tzinfo=UTC)
PARAMETER = "/restarter/clusters/cluster_abc123/environment"
COMMAND_ID = "5a9cd0e0-3b8b-4f5e-9a6e-7c2f1d0e4b21"  # SSM command ids are 36-character UUIDs


class ModelViolationError(AssertionError):
    """A request the real service refuses by its model's maximums, enums or patterns."""


def model_violations(value: Any, shape: Shape, path: str = "", *, patterns: bool = True) -> list[str]:
    """The maximums, enums and patterns of `shape` that `value` breaks (botocore checks none).

    `patterns=False` for answers: the services' own answers miss some output patterns (SSM's
    `ExecutionElapsedTime` has a date's pattern), while they keep to the enums and maximums."""
    problems: list[str] = []
    meta = shape.metadata
    if shape.type_name == "structure" and isinstance(value, dict):
        for name, member in shape.members.items():  # type: ignore[attr-defined]
            if name in value:
                problems += model_violations(value[name], member, f"{path}.{name}" if path else name, patterns=patterns)
        return problems
    if shape.type_name == "list" and isinstance(value, list):
        if "max" in meta and len(value) > meta["max"]:
            problems.append(f"{path}: {len(value)} items, the model allows at most {meta['max']}")
        for i, item in enumerate(value):
            problems += model_violations(item, shape.member, f"{path}[{i}]", patterns=patterns)  # type: ignore[attr-defined]
        return problems
    if shape.type_name == "map" and isinstance(value, dict):
        for key, item in value.items():
            problems += model_violations(key, shape.key, f"{path} key", patterns=patterns)  # type: ignore[attr-defined]
            problems += model_violations(item, shape.value, f"{path}[{key!r}]", patterns=patterns)  # type: ignore[attr-defined]
        return problems
    if shape.type_name == "string" and isinstance(value, str):
        if "max" in meta and len(value) > meta["max"]:
            problems.append(f"{path}: {len(value)} characters, the model allows at most {meta['max']}")
        enum = getattr(shape, "enum", None)
        if enum and value not in enum:
            problems.append(f"{path}: {value!r} is none of the model's values")
        if patterns and "pattern" in meta:
            try:
                if not _regex.search(meta["pattern"], value):
                    problems.append(f"{path}: {value!r} does not match {meta['pattern']!r}")
            except re.error:  # a Java-only construct: the pattern cannot be checked here
                pass
    if shape.type_name in ("integer", "long") and isinstance(value, int) and "max" in meta and value > meta["max"]:
        problems.append(f"{path}: {value} is above the model's maximum {meta['max']}")
    return problems


@dataclass
class Stubbed:
    """An `Ec2Provider` on stubbed EC2 and SSM clients, and every request they built."""

    provider: Ec2Provider
    ec2: Stubber
    ssm: Stubber
    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def params(self, operation: str) -> list[dict[str, Any]]:
        """The parameters of each `operation` call, in order."""
        return [params for name, params in self.sent if name == operation]

    def assert_no_pending_responses(self) -> None:
        self.ec2.assert_no_pending_responses()
        self.ssm.assert_no_pending_responses()


def _real_client(service: str, stubbed: Stubbed) -> Any:
    client = boto3.client(service, region_name=REGION, config=PROVIDER_CLIENT_CONFIG)  # type: ignore[call-overload]

    def check(params: dict[str, Any], model: OperationModel, **_: Any) -> None:
        stubbed.sent.append((model.name, params))
        problems = model_violations(params, model.input_shape) if model.input_shape is not None else []
        if problems:
            raise ModelViolationError(f"{service}:{model.name}: the real service refuses: " + "; ".join(problems))

    def never_send(request: Any, **_: Any) -> None:
        raise AssertionError(f"{service}: a request reached the network layer: {request.url}")

    client.meta.events.register("before-parameter-build", check)
    # registered first, so it runs before moto's handler (present once moto is imported)
    client.meta.events.register_first("before-send", never_send)
    return client


@pytest.fixture
def stubbed(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stubbed]:
    """Real boto3 clients (fake credentials, no endpoint reached) with a `Stubber` each."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    holder = Stubbed(provider=None, ec2=None, ssm=None)  # type: ignore[arg-type]
    ec2, ssm = _real_client("ec2", holder), _real_client("ssm", holder)
    holder.provider, holder.ec2, holder.ssm = Ec2Provider(ec2, ssm), Stubber(ec2), Stubber(ssm)
    with holder.ec2, holder.ssm:
        yield holder


# ------------------------------------------------------------------ realistic responses


def tags(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in values.items()]


def instance(instance_id: str, *, state: str = "running", index: int = 0, **extra: Any) -> dict[str, Any]:
    """One DescribeInstances instance of a p4d.24xlarge, as EC2 answers it."""
    codes = {"pending": 0, "running": 16, "stopping": 64, "stopped": 80}
    running = state == "running"
    return {
        "AmiLaunchIndex": index,
        "ImageId": "ami-0abcdef1234567890",
        "InstanceId": instance_id,
        "InstanceType": "p4d.24xlarge",
        "LaunchTime": WHEN,
        "Monitoring": {"State": "disabled"},
        "Placement": {"AvailabilityZone": "us-east-1a", "GroupName": "", "Tenancy": "default"},
        "PrivateDnsName": f"ip-10-0-1-{10 + index}.ec2.internal",
        "PrivateIpAddress": f"10.0.1.{10 + index}",
        "ProductCodes": [],
        "PublicDnsName": f"ec2-54-0-0-{10 + index}.compute-1.amazonaws.com" if running else "",
        "State": {"Code": codes[state], "Name": state},
        "StateTransitionReason": "" if running else "User initiated (2024-01-15 02:00:05 GMT)",
        "SubnetId": "subnet-0123456789abcdef0",
        "VpcId": "vpc-0123456789abcdef0",
        "Architecture": "x86_64",
        "BlockDeviceMappings": [
            {
                "DeviceName": "/dev/sda1",
                "Ebs": {
                    "AttachTime": WHEN,
                    "DeleteOnTermination": True,
                    "Status": "attached",
                    "VolumeId": f"vol-0{index}aaaaaaaaaaaaaaa",
                },
            }
        ],
        "EbsOptimized": True,
        "EnaSupport": True,
        "Hypervisor": "xen",
        "RootDeviceName": "/dev/sda1",
        "RootDeviceType": "ebs",
        "SecurityGroups": [{"GroupId": "sg-0123456789abcdef0", "GroupName": "restarter-gpu"}],
        "SourceDestCheck": True,
        "VirtualizationType": "hvm",
        "CpuOptions": {"CoreCount": 48, "ThreadsPerCore": 2},
        **extra,
    }


def reservations(*instances: dict[str, Any]) -> dict[str, Any]:
    return {
        "Reservations": [
            {
                "ReservationId": "r-0123456789abcdef0",
                "OwnerId": ACCOUNT,
                "Groups": [],
                "Instances": list(instances),
            }
        ]
    }


def volume(volume_id: str, instance_id: str, device: str, size: int) -> dict[str, Any]:
    return {
        "Attachments": [
            {
                "AttachTime": WHEN,
                "Device": device,
                "InstanceId": instance_id,
                "State": "attached",
                "VolumeId": volume_id,
                "DeleteOnTermination": device == "/dev/sda1",
            }
        ],
        "AvailabilityZone": "us-east-1a",
        "CreateTime": WHEN,
        "Encrypted": False,
        "Size": size,
        "SnapshotId": "",
        "State": "in-use",
        "VolumeId": volume_id,
        "Iops": 3000,
        "Throughput": 125,
        "VolumeType": "gp3",
        "MultiAttachEnabled": False,
    }


def send_command_answer(
    document: str, instance_ids: list[str], parameters: dict[str, list[str]], command_id: str = COMMAND_ID
) -> dict[str, Any]:
    """SendCommand's answer: the command accepted, no agent has run it yet."""
    return {
        "Command": {
            "CommandId": command_id,
            "DocumentName": document,
            "DocumentVersion": "$DEFAULT",
            "Comment": "",
            "ExpiresAfter": WHEN,
            "Parameters": parameters,
            "InstanceIds": instance_ids,
            "Targets": [],
            "RequestedDateTime": WHEN,
            "Status": "Pending",
            "StatusDetails": "Pending",
            "OutputS3Region": REGION,
            "MaxConcurrency": "50",
            "MaxErrors": "0",
            "TargetCount": len(instance_ids),
            "CompletedCount": 0,
            "ErrorCount": 0,
            "DeliveryTimedOutCount": 0,
            "ServiceRole": "",
            "NotificationConfig": {"NotificationArn": "", "NotificationEvents": [], "NotificationType": ""},
            "CloudWatchOutputConfig": {"CloudWatchOutputEnabled": False},
            "TimeoutSeconds": 3600,
        }
    }


def instance_status(instance_id: str, instance_status: str, system_status: str) -> dict[str, Any]:
    return {
        "AvailabilityZone": "us-east-1a",
        "InstanceId": instance_id,
        "InstanceState": {"Code": 16, "Name": "running"},
        "InstanceStatus": {"Details": [{"Name": "reachability", "Status": "passed"}], "Status": instance_status},
        "SystemStatus": {"Details": [{"Name": "reachability", "Status": "passed"}], "Status": system_status},
        "AttachedEbsStatus": {"Details": [{"Name": "reachability", "Status": "passed"}], "Status": "ok"},
        "Events": [],
    }


def gpu_type(name: str, vcpus: int, memory_mib: int, gpus: int, gpu: str, gpu_mib: int) -> dict[str, Any]:
    """A DescribeInstanceTypes entry, trimmed to what a GPU type's real answer always carries."""
    return {
        "InstanceType": name,
        "CurrentGeneration": True,
        "FreeTierEligible": False,
        "SupportedUsageClasses": ["on-demand", "spot"],
        "SupportedRootDeviceTypes": ["ebs"],
        "SupportedVirtualizationTypes": ["hvm"],
        "BareMetal": False,
        "Hypervisor": "nitro",
        "ProcessorInfo": {"SupportedArchitectures": ["x86_64"], "SustainedClockSpeedInGhz": 3.0},
        "VCpuInfo": {"DefaultVCpus": vcpus, "DefaultCores": vcpus // 2, "DefaultThreadsPerCore": 2},
        "MemoryInfo": {"SizeInMiB": memory_mib},
        "InstanceStorageSupported": True,
        "GpuInfo": {
            "Gpus": [{"Name": gpu, "Manufacturer": "NVIDIA", "Count": gpus, "MemoryInfo": {"SizeInMiB": gpu_mib}}],
            "TotalGpuMemoryInMiB": gpus * gpu_mib,
        },
        "HibernationSupported": False,
        "BurstablePerformanceSupported": False,
        "DedicatedHostsSupported": True,
        "AutoRecoverySupported": False,
        "SupportedBootModes": ["legacy-bios", "uefi"],
    }


def snapshot(snapshot_id: str, volume_id: str, size: int, state: str, extra_tags: dict[str, str]) -> dict[str, Any]:
    return {
        "Description": "restarter checkpoint ckpt_20240115",
        "Encrypted": False,
        "OwnerId": ACCOUNT,
        "Progress": "100%" if state == "completed" else "0%",
        "SnapshotId": snapshot_id,
        "StartTime": WHEN,
        "State": state,
        "VolumeId": volume_id,
        "VolumeSize": size,
        "Tags": tags({"restarter:cluster": "cluster_abc123", **extra_tags}),
    }


def modification(volume_id: str, state: str | None) -> dict[str, Any]:
    mod: dict[str, Any] = {
        "VolumeId": volume_id,
        "TargetSize": 400,
        "TargetIops": 3000,
        "TargetVolumeType": "gp3",
        "TargetThroughput": 125,
        "OriginalSize": 200,
        "OriginalIops": 3000,
        "OriginalVolumeType": "gp3",
        "OriginalThroughput": 125,
        "Progress": 0,
        "StartTime": WHEN,
    }
    if state is not None:
        mod["ModificationState"] = state
    return mod


def invocation(instance_id: str, status: str, code: int, stdout: str, stderr: str = "") -> dict[str, Any]:
    done = status not in ("Pending", "InProgress", "Delayed")
    return {
        "CommandId": COMMAND_ID,
        "InstanceId": instance_id,
        "Comment": "restarter health_check",
        "DocumentName": "AWS-RunShellScript",
        "DocumentVersion": "$DEFAULT",
        "PluginName": "aws:runShellScript",
        "ResponseCode": code,
        "ExecutionStartDateTime": "2024-01-15T02:00:06.123Z",
        "ExecutionElapsedTime": "PT1.52S" if done else "",
        "ExecutionEndDateTime": "2024-01-15T02:00:07.643Z" if done else "",
        "Status": status,
        "StatusDetails": status,
        "StandardOutputContent": stdout,
        "StandardOutputUrl": "",
        "StandardErrorContent": stderr,
        "StandardErrorUrl": "",
        "CloudWatchOutputConfig": {"CloudWatchOutputEnabled": False},
    }


def parameter_answer(values: dict[str, str], version: int, selector: str | None = None) -> dict[str, Any]:
    parameter = {
        "Name": PARAMETER,
        "Type": "SecureString",
        "Value": json.dumps(values, sort_keys=True),
        "Version": version,
        "LastModifiedDate": WHEN,
        "ARN": f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter{PARAMETER}",
        "DataType": "text",
    }
    if selector:
        parameter["Selector"] = selector
    return {"Parameter": parameter}


def transition(instance_id: str, previous: tuple[int, str], current: tuple[int, str]) -> dict[str, Any]:
    return {
        "InstanceId": instance_id,
        "PreviousState": {"Code": previous[0], "Name": previous[1]},
        "CurrentState": {"Code": current[0], "Name": current[1]},
    }


def instance_information(instance_id: str, ping: str) -> dict[str, Any]:
    return {
        "InstanceId": instance_id,
        "PingStatus": ping,
        "LastPingDateTime": WHEN,
        "AgentVersion": "3.3.1611.0",
        "IsLatestVersion": False,
        "PlatformType": "Linux",
        "PlatformName": "Ubuntu",
        "PlatformVersion": "22.04",
        "ResourceType": "EC2Instance",
        "IPAddress": "10.0.1.10",
        "ComputerName": "ip-10-0-1-10.ec2.internal",
        "AssociationStatus": "Success",
        "SourceId": instance_id,
        "SourceType": "AWS::EC2::Instance",
    }
