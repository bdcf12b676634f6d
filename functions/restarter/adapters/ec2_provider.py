"""The EC2 + SSM provider: GPU instances, their EBS volumes, and commands through SSM Run Command.

Commands on the instances are shell scripts sent with `AWS-RunShellScript`. Their first two
lines name the operation and its non-secret arguments (`# restarter-op:` and
`# restarter-args:`), so that command history says what ran and why. Environment values are
never part of a command: the script reads them from a SecureString parameter on the instance.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from restarter.adapters.aws_errors import call, translated
from restarter.domain.errors import ProviderError
from restarter.domain.gpu.nvidia_smi import QUERY_FIELDS
from restarter.domain.inventory import CommandInvocation, InstanceTypeInfo, InstanceView, SnapshotView, VolumeView

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.literals import InstanceTypeType
    from mypy_boto3_ec2.type_defs import TagTypeDef
    from mypy_boto3_ssm import SSMClient


CONTAINER_NAME = "restarter-workload"
# SendCommand takes at most 50 InstanceIds
SEND_COMMAND_MAX_TARGETS = 50
COMMAND_ID_SEPARATOR = "+"


def _chunks(instance_ids: list[str]) -> list[list[str]]:
    return [
        instance_ids[n : n + SEND_COMMAND_MAX_TARGETS] for n in range(0, len(instance_ids), SEND_COMMAND_MAX_TARGETS)
    ]


def _script(op: str, args: dict[str, Any]) -> list[str]:
    header = [
        f"# restarter-op: {op}",
        f"# restarter-args: {json.dumps(args, sort_keys=True)}",
        "set -euo pipefail",
    ]
    if op == "stop_services":
        grace = int(args["grace_seconds"])
        return [
            *header,
            f"if docker inspect {CONTAINER_NAME} >/dev/null 2>&1; then",
            f"  docker stop --time {grace} {CONTAINER_NAME}",
            "fi",
            f"echo stopped services within {grace}s",
        ]
    if op == "start_services":
        ports = " ".join(
            f"-p {int(p['external_port'])}:{int(p['internal_port'])}/{shlex.quote(p['protocol'])}"
            for p in args["ports"]
        )
        env_lines = []
        if args.get("environment_parameter"):
            env_lines = [
                "umask 077",
                "aws ssm get-parameter --with-decryption --name "
                f"{shlex.quote(args['environment_parameter'])} --query Parameter.Value --output text"
                " | python3 -c 'import json,sys; [print(f\"{k}={v}\") for k,v in json.load(sys.stdin).items()]'"
                " > /run/restarter.env",
            ]
        env_flag = "--env-file /run/restarter.env" if env_lines else ""
        image = shlex.quote(args["image"])
        return [
            *header,
            *env_lines,
            f"docker pull {image}",
            f"docker rm -f {CONTAINER_NAME} >/dev/null 2>&1 || true",
            f"docker run -d --name {CONTAINER_NAME} --gpus all --restart unless-stopped {env_flag} {ports} {image}",
            "rm -f /run/restarter.env",
            f"echo started {image}",
        ]
    if op == "health_check":
        return [*header, *_health_script(args)]
    if op == "reset_gpu":
        return [*header, *RESET_GPU_SCRIPT]
    raise ProviderError(f"unknown command operation {op}", {"op": op})


# Each probe is bounded (`timeout`), so a wedged GPU, whose nvidia-smi hangs, still answers
# within the command's timeout; the sections' framing is read by `restarter.domain.gpu.report`.
# SSM keeps the first 24,000 characters of stdout: the XML fallback asks only for the memory
# sections (-d) and the kernel log keeps its last 100 matching lines.
HEALTH_SCRIPT_PROBES: tuple[tuple[str, int, str], ...] = (
    ("nvlink", 20, "nvidia-smi nvlink --status"),
    ("processes", 20, "nvidia-smi --query-compute-apps=gpu_uuid,pid,process_name --format=csv,noheader"),
)
# The kernel log since this boot (journalctl; dmesg where the journal is not persistent).
# After a GPU reset, only what the kernel logged since the reset (the reset script leaves its time
# in /run, which a boot empties): the Xids the reset cured are still in this boot's log.
RESET_MARKER = "/run/restarter/gpu-reset-at"
KERNEL_LOG = (
    f'{{ since=""; if [ -f {RESET_MARKER} ]; then since="--since=@$(cat {RESET_MARKER})"; fi;'
    " journalctl -k -b --no-pager $since 2>/dev/null || dmesg 2>/dev/null; }"
    " | grep -E 'NVRM: Xid|fallen off the bus' | tail -n 100"
)
# `nvidia-smi -r` resets every GPU only when nothing holds them; on NVSwitch systems Fabric
# Manager must be stopped around it (NVIDIA GPU debug guidelines).
RESET_GPU_SCRIPT: tuple[str, ...] = (
    "set +e",
    "apps=$(timeout 20 nvidia-smi --query-compute-apps=gpu_bus_id,pid --format=csv,noheader)",
    'if [ -n "$apps" ]; then echo "GPU in use: $apps" >&2; exit 3; fi',
    "fm=0; if systemctl is-active --quiet nvidia-fabricmanager; then systemctl stop nvidia-fabricmanager; fm=1; fi",
    "timeout 120 nvidia-smi -r; rc=$?",
    "if [ $fm -eq 1 ]; then systemctl start nvidia-fabricmanager; fi",
    f"if [ $rc -eq 0 ]; then mkdir -p {RESET_MARKER.rsplit('/', 1)[0]} && date +%s > {RESET_MARKER}; fi",
    "exit $rc",
)


def _health_script(args: dict[str, Any]) -> list[str]:
    """The health report (see `restarter.domain.gpu.report`): GPUs, NVLink, kernel Xids,
    versions, DCGM, GPU processes, then the workload container and its ports."""
    fields = ",".join(QUERY_FIELDS)
    lines = [
        "set +e",
        "echo 'restarter-health: 2'",
        'section() { echo "### section $1 rc=$2"; if [ -n "$3" ]; then printf \'%s\\n\' "$3"; fi; }',
        "if command -v nvidia-smi >/dev/null 2>&1; then",
        f"  out=$(timeout 30 nvidia-smi --query-gpu={fields} --format=csv,noheader,nounits 2>&1); rc=$?",
        '  section gpus $rc "$out"',
        "  if [ $rc -ne 0 ]; then",
        '    out=$(timeout 30 nvidia-smi -q -x -d ECC,PAGE_RETIREMENT,ROW_REMAPPER 2>&1); section gpus-xml $? "$out"',
        "  fi",
    ]
    for name, seconds, command in HEALTH_SCRIPT_PROBES:
        lines += [f'  out=$(timeout {seconds} {command} 2>&1); section {name} $? "$out"']
    lines += [
        # a failing nvidia-smi prints its failure on stdout: no version then
        "  driver=$(timeout 20 nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null) || driver=''",
        '  driver=$(printf "%s\\n" "$driver" | head -n 1)',
        "  cuda=$(timeout 20 nvidia-smi 2>/dev/null) || cuda=''",
        "  cuda=$(printf '%s\\n' \"$cuda\" | grep -o 'CUDA Version: [0-9.]*' | grep -o '[0-9.]*$')",
        '  section versions 0 "driver_version: $driver"$\'\\n\'"cuda_version: $cuda"',
        "else",
        "  section gpus 127 'nvidia-smi: command not found'",
        "fi",
        f'out=$({KERNEL_LOG}); section kernel 0 "$out"',
        'if command -v dcgmi >/dev/null 2>&1; then out=$(timeout 60 dcgmi diag -r 1 2>&1); section dcgm $? "$out";'
        " else section dcgm 127 'not installed'; fi",
        "echo '### section workload rc=0'",
        f"state=$(docker inspect -f '{{{{.State.Status}}}} {{{{.Config.Image}}}}' {CONTAINER_NAME} 2>/dev/null"
        " || echo missing)",
        'echo "container: $state"',
        *[_port_check(p) for p in args["ports"]],
        "echo '### end'",
        "exit 0",
    ]
    return lines


def _port_check(port: dict[str, Any]) -> str:
    """One `port: <protocol>/<host port> open|closed` line, probed where clients connect: the
    host port docker publishes (`-p external:internal`), not the container's port."""
    protocol = "udp" if port["protocol"] == "udp" else "tcp"
    internal, external = int(port["internal_port"]), int(port["external_port"])
    if protocol == "udp":  # UDP has no handshake to probe: check that docker publishes the port
        probe = f"docker port {CONTAINER_NAME} {internal}/udp 2>/dev/null | grep -q ':{external}$'"
    else:
        probe = f"nc -z -w 3 127.0.0.1 {external}"
    label = f"{protocol}/{external}"
    return f"if {probe}; then echo 'port: {label} open'; else echo 'port: {label} closed'; fi"


class Ec2Provider:
    def __init__(self, ec2: EC2Client, ssm: SSMClient) -> None:
        self._ec2 = ec2
        self._ssm = ssm

    # ----------------------------------------------------------- inventory
    def describe_instances(self, instance_ids: list[str]) -> list[InstanceView]:
        with translated("ec2:DescribeInstances"):
            reservations = self._ec2.describe_instances(InstanceIds=instance_ids)["Reservations"]
        with translated("ec2:DescribeInstanceStatus"):
            statuses = self._ec2.describe_instance_status(InstanceIds=instance_ids, IncludeAllInstances=True)[
                "InstanceStatuses"
            ]
        by_id = {s["InstanceId"]: s for s in statuses}
        views = []
        for reservation in reservations:
            for inst in reservation["Instances"]:
                status = by_id.get(inst["InstanceId"], {})
                views.append(
                    InstanceView(
                        instance_id=inst["InstanceId"],
                        state=inst["State"]["Name"],
                        instance_type=inst["InstanceType"],
                        instance_status=status.get("InstanceStatus", {}).get("Status", "not-applicable"),
                        system_status=status.get("SystemStatus", {}).get("Status", "not-applicable"),
                        public_dns=inst.get("PublicDnsName") or None,
                        private_ip=inst.get("PrivateIpAddress"),
                        tags={t["Key"]: t["Value"] for t in inst.get("Tags", [])},
                    )
                )
        return sorted(views, key=lambda v: instance_ids.index(v.instance_id))

    def describe_volumes(self, instance_ids: list[str]) -> list[VolumeView]:
        with translated("ec2:DescribeInstances"):
            reservations = self._ec2.describe_instances(InstanceIds=instance_ids)["Reservations"]
        roots: dict[str, str] = {}
        for reservation in reservations:
            for inst in reservation["Instances"]:
                roots[inst["InstanceId"]] = inst.get("RootDeviceName", "/dev/sda1")
        with translated("ec2:DescribeVolumes"):
            volumes = self._ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": instance_ids}])[
                "Volumes"
            ]
        views = []
        for volume in volumes:
            for attachment in volume.get("Attachments", []):
                if attachment["InstanceId"] in roots:
                    views.append(
                        VolumeView(
                            volume_id=volume["VolumeId"],
                            instance_id=attachment["InstanceId"],
                            device_name=attachment["Device"],
                            size_gb=int(volume["Size"]),
                            is_root=attachment["Device"] == roots[attachment["InstanceId"]],
                        )
                    )
        return sorted(views, key=lambda v: (v.instance_id, v.device_name))

    @staticmethod
    def _type_info(raw: Mapping[str, Any]) -> InstanceTypeInfo:
        gpus = raw.get("GpuInfo", {}).get("Gpus", [])
        return InstanceTypeInfo(
            name=raw["InstanceType"],
            vcpus=int(raw["VCpuInfo"]["DefaultVCpus"]),
            memory_gb=int(raw["MemoryInfo"]["SizeInMiB"]) // 1024,
            gpu_count=sum(int(g.get("Count", 0)) for g in gpus),
            gpu_name=gpus[0].get("Name") if gpus else None,
            gpu_manufacturer=gpus[0].get("Manufacturer") if gpus else None,
        )

    def describe_instance_type(self, name: str) -> InstanceTypeInfo:
        with translated("ec2:DescribeInstanceTypes"):
            types = self._ec2.describe_instance_types(InstanceTypes=[cast("InstanceTypeType", name)])["InstanceTypes"]
        if not types:
            raise ProviderError(f"unknown instance type {name}", {"instance_type": name})
        return self._type_info(types[0])

    def instance_types_in_family(self, family: str) -> list[InstanceTypeInfo]:
        found: list[InstanceTypeInfo] = []
        paginator = self._ec2.get_paginator("describe_instance_types")
        with translated("ec2:DescribeInstanceTypes"):
            for page in paginator.paginate(Filters=[{"Name": "instance-type", "Values": [f"{family}.*"]}]):
                found += [self._type_info(t) for t in page["InstanceTypes"]]
        return found

    # ----------------------------------------------------------- power
    def reboot(self, instance_ids: list[str]) -> None:
        call("ec2:RebootInstances", lambda: self._ec2.reboot_instances(InstanceIds=instance_ids))

    def stop(self, instance_ids: list[str], *, force: bool) -> None:
        call("ec2:StopInstances", lambda: self._ec2.stop_instances(InstanceIds=instance_ids, Force=force))

    def start(self, instance_ids: list[str]) -> None:
        call("ec2:StartInstances", lambda: self._ec2.start_instances(InstanceIds=instance_ids))

    def modify_instance_type(self, instance_id: str, instance_type: str) -> None:
        call(
            "ec2:ModifyInstanceAttribute",
            lambda: self._ec2.modify_instance_attribute(InstanceId=instance_id, InstanceType={"Value": instance_type}),
        )

    # ----------------------------------------------------------- storage
    def create_checkpoint(self, instance_ids: list[str], tags: dict[str, str]) -> dict[str, dict[str, str]]:
        volumes = {v.volume_id: v for v in self.describe_volumes(instance_ids)}
        tag_list: list[TagTypeDef] = [{"Key": k, "Value": v} for k, v in tags.items()]
        result: dict[str, dict[str, str]] = {}
        for instance_id in instance_ids:
            response = call(
                "ec2:CreateSnapshots",
                lambda iid=instance_id: self._ec2.create_snapshots(  # type: ignore[misc]
                    InstanceSpecification={"InstanceId": iid, "ExcludeBootVolume": False},
                    Description=f"restarter checkpoint {tags.get('restarter:checkpoint', '')}",
                    TagSpecifications=[{"ResourceType": "snapshot", "Tags": tag_list}],
                    CopyTagsFromSource="volume",
                ),
            )
            for snap in response["Snapshots"]:
                volume = volumes.get(snap["VolumeId"])
                device = volume.device_name if volume else snap["VolumeId"]
                result.setdefault(instance_id, {})[device] = snap["SnapshotId"]
        return result

    def snapshot_states(self, snapshot_ids: list[str]) -> dict[str, str]:
        with translated("ec2:DescribeSnapshots"):
            snaps = self._ec2.describe_snapshots(SnapshotIds=snapshot_ids)["Snapshots"]
        return {s["SnapshotId"]: s["State"] for s in snaps}

    def describe_snapshots(self, snapshot_ids: list[str]) -> list[SnapshotView]:
        # a filter, not SnapshotIds=: an id that does not exist is left out instead of failing the call
        with translated("ec2:DescribeSnapshots"):
            snaps = self._ec2.describe_snapshots(Filters=[{"Name": "snapshot-id", "Values": snapshot_ids}])["Snapshots"]
        return [
            SnapshotView(
                snapshot_id=s["SnapshotId"],
                state=s["State"],
                tags={t["Key"]: t["Value"] for t in s.get("Tags", [])},
            )
            for s in snaps
        ]

    def grow_volume(self, volume_id: str, size_gb: int) -> None:
        call("ec2:ModifyVolume", lambda: self._ec2.modify_volume(VolumeId=volume_id, Size=size_gb))

    def volume_modification_states(self, volume_ids: list[str]) -> dict[str, str]:
        with translated("ec2:DescribeVolumesModifications"):
            mods = self._ec2.describe_volumes_modifications(VolumeIds=volume_ids)["VolumesModifications"]
        return {m["VolumeId"]: m.get("ModificationState", "completed") for m in mods}

    def replace_root_volume(self, instance_id: str, snapshot_id: str) -> str:
        response = call(
            "ec2:CreateReplaceRootVolumeTask",
            lambda: self._ec2.create_replace_root_volume_task(
                InstanceId=instance_id, SnapshotId=snapshot_id, DeleteReplacedRootVolume=False
            ),
        )
        return str(response["ReplaceRootVolumeTask"]["ReplaceRootVolumeTaskId"])

    def replace_root_volume_states(self, instance_id: str, task_ids: list[str]) -> dict[str, str]:
        with translated("ec2:DescribeReplaceRootVolumeTasks"):
            tasks = self._ec2.describe_replace_root_volume_tasks(ReplaceRootVolumeTaskIds=task_ids)[
                "ReplaceRootVolumeTasks"
            ]
        return {t["ReplaceRootVolumeTaskId"]: t["TaskState"] for t in tasks}

    # ----------------------------------------------------------- commands
    def run_command(self, instance_ids: list[str], op: str, args: dict[str, Any], timeout_seconds: int) -> str:
        commands = _script(op, args)
        seconds = max(30, timeout_seconds)
        return self._send(
            instance_ids,
            DocumentName="AWS-RunShellScript",
            Comment=f"restarter {op}",
            TimeoutSeconds=seconds,
            Parameters={"commands": commands, "executionTimeout": [str(seconds)]},
        )

    def run_patch_baseline(self, instance_ids: list[str]) -> str:
        return self._send(
            instance_ids,
            DocumentName="AWS-RunPatchBaseline",
            Comment="restarter apply_system_updates",
            Parameters={"Operation": ["Install"], "RebootOption": ["NoReboot"]},
        )

    def _send(self, instance_ids: list[str], **command: Any) -> str:
        """One SendCommand per 50 instances (SSM's limit); several ids are joined by `+`."""
        ids = []
        for chunk in _chunks(instance_ids):
            response = call(
                "ssm:SendCommand",
                lambda chunk=chunk: self._ssm.send_command(InstanceIds=chunk, **command),  # type: ignore[misc]
            )
            ids.append(str(response["Command"]["CommandId"]))
        return COMMAND_ID_SEPARATOR.join(ids)

    def command_invocations(self, command_id: str, instance_ids: list[str]) -> list[CommandInvocation]:
        """`instance_ids`: the instances the command was sent to, in the same order (a command to
        more than 50 instances is one SendCommand per 50: its id names each, joined by `+`)."""
        command_ids = command_id.split(COMMAND_ID_SEPARATOR)
        owners = {
            iid: command_ids[min(n // SEND_COMMAND_MAX_TARGETS, len(command_ids) - 1)]
            for n, iid in enumerate(instance_ids)
        }
        result = []
        for instance_id in instance_ids:
            inv = call(
                "ssm:GetCommandInvocation",
                lambda iid=instance_id: self._ssm.get_command_invocation(  # type: ignore[misc]
                    CommandId=owners[iid], InstanceId=iid
                ),
            )
            result.append(
                CommandInvocation(
                    instance_id=instance_id,
                    status=inv.get("Status", "Pending"),
                    response_code=int(inv.get("ResponseCode", -1)),
                    stdout=inv.get("StandardOutputContent", ""),
                    stderr=inv.get("StandardErrorContent", ""),
                )
            )
        return result

    def agents_online(self, instance_ids: list[str]) -> dict[str, bool]:
        """Per instance, whether its SSM agent answers (pages read to the end, 50 ids a filter)."""
        online: dict[str, bool] = {}
        for chunk in _chunks(instance_ids):
            kwargs: dict[str, Any] = {"Filters": [{"Key": "InstanceIds", "Values": chunk}], "MaxResults": 50}
            while True:
                with translated("ssm:DescribeInstanceInformation"):
                    page = self._ssm.describe_instance_information(**kwargs)
                online.update(
                    {i["InstanceId"]: i.get("PingStatus") == "Online" for i in page["InstanceInformationList"]}
                )
                if not page.get("NextToken"):
                    break
                kwargs["NextToken"] = page["NextToken"]
        return {iid: online.get(iid, False) for iid in instance_ids}

    # ----------------------------------------------------------- environment
    def put_environment(self, parameter: str, values: dict[str, str]) -> int:
        response = call(
            "ssm:PutParameter",
            lambda: self._ssm.put_parameter(
                Name=parameter,
                Value=json.dumps(values, sort_keys=True),
                Type="SecureString",
                Overwrite=True,
                Tier="Intelligent-Tiering",  # standard (4 KB) when it fits, advanced (8 KB) when not
            ),
        )
        return int(response["Version"])

    def get_environment(self, parameter: str, version: int | None = None) -> dict[str, str]:
        name = f"{parameter}:{version}" if version else parameter
        try:
            with translated("ssm:GetParameter"):
                response = self._ssm.get_parameter(Name=name, WithDecryption=True)
        except ProviderError as exc:
            if exc.details.get("aws_error_code") == "ParameterNotFound":
                return {}
            raise
        values: dict[str, str] = json.loads(response["Parameter"]["Value"])
        return values

    def delete_environment(self, parameter: str) -> None:
        try:
            with translated("ssm:DeleteParameter"):
                self._ssm.delete_parameter(Name=parameter)
        except ProviderError as exc:
            if exc.details.get("aws_error_code") != "ParameterNotFound":
                raise
