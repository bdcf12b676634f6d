"""A fake cloud behind the provider interface (adapters/provider.py): a few in-memory instances,
volumes, snapshots and commands, every change instant, failures on demand."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from restarter.domain.errors import NotFoundError, ProviderError
from restarter.domain.gpu.nvidia_smi import QUERY_FIELDS
from restarter.domain.inventory import CommandInvocation, InstanceTypeInfo, InstanceView, VolumeView

INSTANCE_TYPES = {
    info.name: info
    for info in (
        InstanceTypeInfo("p4d.24xlarge", vcpus=96, memory_gb=1152, gpu_count=8, gpu_name="A100"),
        InstanceTypeInfo("g5.xlarge", vcpus=4, memory_gb=16, gpu_count=1, gpu_name="A10G"),
        InstanceTypeInfo("g5.2xlarge", vcpus=8, memory_gb=32, gpu_count=1, gpu_name="A10G"),
        InstanceTypeInfo("g5.4xlarge", vcpus=16, memory_gb=64, gpu_count=1, gpu_name="A10G"),
        InstanceTypeInfo("g5.12xlarge", vcpus=48, memory_gb=192, gpu_count=4, gpu_name="A10G"),
    )
}


@dataclass
class FakeInstance:
    instance_id: str
    instance_type: str
    state: str = "running"
    container_image: str | None = None
    open_ports: list[str] = field(default_factory=list)
    visible_gpus: int | None = None  # None: every GPU of its type
    # kernel log lines since boot (Xid lines) the health report carries
    kernel_lines: list[str] = field(default_factory=list)
    # per GPU index: query-gpu fields to answer instead of the healthy defaults
    gpu_overrides: dict[int, dict[str, str]] = field(default_factory=dict)


@dataclass
class FakeCommand:
    command_id: str
    op: str
    instance_ids: list[str]
    args: dict[str, Any]
    polls: int = 0


class FakeProvider:
    """The provider interface over a few in-memory instances; every state change is instant.

    `fail(method, exc)` makes the next call of `method` raise `exc` (a throttle, a refusal);
    `command_status[op]` makes a command end with another status than `Success`;
    `agents_offline` holds instances whose SSM agent never answers;
    `calls` lists every mutating call, for a test to say what the restart did.
    """

    def __init__(self) -> None:
        self.instances: dict[str, FakeInstance] = {}
        self.volumes: dict[str, VolumeView] = {}
        self.commands: dict[str, FakeCommand] = {}
        self.snapshots: dict[str, str] = {}
        self.root_tasks: dict[str, str] = {}
        self.environments: dict[str, list[dict[str, str]]] = {}
        self.command_status: dict[str, str] = {}
        self.command_pending_polls = 0
        self.agents_offline: set[str] = set()
        self.calls: list[tuple[str, Any]] = []
        self._failures: dict[str, list[Exception]] = {}
        self._ids = itertools.count(1)

    # ----- test controls
    def add_instance(self, instance_type: str, *, state: str = "running", data_volume_gb: int | None = 500) -> str:
        n = next(self._ids)
        instance_id = f"i-{n:017x}"
        self.instances[instance_id] = FakeInstance(instance_id, instance_type, state)
        self._add_volume(instance_id, "/dev/sda1", 100, is_root=True)
        if data_volume_gb:
            self._add_volume(instance_id, "/dev/sdf", data_volume_gb, is_root=False)
        return instance_id

    def _add_volume(self, instance_id: str, device: str, size_gb: int, *, is_root: bool) -> None:
        volume_id = f"vol-{next(self._ids):017x}"
        self.volumes[volume_id] = VolumeView(volume_id, instance_id, device, size_gb, is_root)

    def fail(self, method: str, exc: Exception, times: int = 1) -> None:
        self._failures.setdefault(method, []).extend([exc] * times)

    def ops(self) -> list[str]:
        """The op of every command sent, oldest first."""
        return [c.op for c in self.commands.values()]

    def called(self, method: str) -> list[Any]:
        return [args for name, args in self.calls if name == method]

    def _enter(self, method: str, args: Any = None) -> None:
        queued = self._failures.get(method)
        if queued:
            raise queued.pop(0)
        if args is not None:
            self.calls.append((method, args))

    # ----- inventory
    def describe_instances(self, instance_ids: list[str]) -> list[InstanceView]:
        self._enter("describe_instances")
        views = []
        for iid in instance_ids:
            inst = self.instances[iid]
            checks = "ok" if inst.state == "running" else "not-applicable"
            views.append(InstanceView(iid, inst.state, inst.instance_type, checks, checks))
        return views

    def describe_volumes(self, instance_ids: list[str]) -> list[VolumeView]:
        self._enter("describe_volumes")
        return [v for v in self.volumes.values() if v.instance_id in instance_ids]

    def describe_instance_type(self, name: str) -> InstanceTypeInfo:
        self._enter("describe_instance_type")
        if name not in INSTANCE_TYPES:
            raise ProviderError("Unknown instance type", {"instance_type": name})
        return INSTANCE_TYPES[name]

    def instance_types_in_family(self, family: str) -> list[InstanceTypeInfo]:
        self._enter("instance_types_in_family")
        return [t for t in INSTANCE_TYPES.values() if t.family == family]

    # ----- power
    def reboot(self, instance_ids: list[str]) -> None:
        self._enter("reboot", list(instance_ids))
        for iid in instance_ids:
            self._services_down(iid)

    def stop(self, instance_ids: list[str], *, force: bool) -> None:
        self._enter("stop", (list(instance_ids), force))
        for iid in instance_ids:
            self.instances[iid].state = "stopped"
            self._services_down(iid)

    def start(self, instance_ids: list[str]) -> None:
        self._enter("start", list(instance_ids))
        for iid in instance_ids:
            self.instances[iid].state = "running"

    def modify_instance_type(self, instance_id: str, instance_type: str) -> None:
        self._enter("modify_instance_type", (instance_id, instance_type))
        if self.instances[instance_id].state != "stopped":
            raise ProviderError("IncorrectInstanceState", {"instance_id": instance_id})
        self.instances[instance_id].instance_type = instance_type

    def _services_down(self, instance_id: str) -> None:
        inst = self.instances[instance_id]
        inst.container_image = None
        inst.open_ports = []

    # ----- storage
    def create_checkpoint(self, instance_ids: list[str], tags: dict[str, str]) -> dict[str, dict[str, str]]:
        self._enter("create_checkpoint", (list(instance_ids), dict(tags)))
        result: dict[str, dict[str, str]] = {}
        for volume in self.volumes.values():
            if volume.instance_id in instance_ids:
                snapshot_id = f"snap-{next(self._ids):017x}"
                self.snapshots[snapshot_id] = "completed"
                result.setdefault(volume.instance_id, {})[volume.device_name] = snapshot_id
        return result

    def snapshot_states(self, snapshot_ids: list[str]) -> dict[str, str]:
        self._enter("snapshot_states")
        return {s: self.snapshots.get(s, "error") for s in snapshot_ids}

    def grow_volume(self, volume_id: str, size_gb: int) -> None:
        self._enter("grow_volume", (volume_id, size_gb))
        old = self.volumes[volume_id]
        self.volumes[volume_id] = VolumeView(old.volume_id, old.instance_id, old.device_name, size_gb, old.is_root)

    def volume_modification_states(self, volume_ids: list[str]) -> dict[str, str]:
        self._enter("volume_modification_states")
        return dict.fromkeys(volume_ids, "completed")

    def replace_root_volume(self, instance_id: str, snapshot_id: str) -> str:
        self._enter("replace_root_volume", (instance_id, snapshot_id))
        task_id = f"replacevol-{next(self._ids):017x}"
        self.root_tasks[task_id] = "succeeded"
        return task_id

    def replace_root_volume_states(self, instance_id: str, task_ids: list[str]) -> dict[str, str]:
        self._enter("replace_root_volume_states")
        return {t: self.root_tasks.get(t, "failed") for t in task_ids}

    # ----- commands on the instances
    def run_command(self, instance_ids: list[str], op: str, args: dict[str, Any], timeout_seconds: int) -> str:
        self._enter("run_command", (op, list(instance_ids)))
        command_id = f"cmd-{next(self._ids)}"
        self.commands[command_id] = FakeCommand(command_id, op, list(instance_ids), dict(args))
        if self.command_status.get(op, "Success") == "Success":
            for iid in instance_ids:
                self.apply_op(iid, op, args)
        return command_id

    def run_patch_baseline(self, instance_ids: list[str]) -> str:
        return self.run_command(instance_ids, "patch_baseline", {}, timeout_seconds=3600)

    def apply_op(self, instance_id: str, op: str, args: dict[str, Any]) -> None:
        """What a command that succeeds does to an instance's workload."""
        inst = self.instances[instance_id]
        if op == "stop_services":
            self._services_down(instance_id)
        elif op == "start_services":
            inst.container_image = args["image"]
            inst.open_ports = [f"{p['protocol']}/{p['external_port']}" for p in args["ports"]]

    def command_invocations(self, command_id: str, instance_ids: list[str]) -> list[CommandInvocation]:
        self._enter("command_invocations")
        command = self.commands[command_id]
        command.polls += 1
        if command.polls <= self.command_pending_polls:
            return [CommandInvocation(iid, "InProgress") for iid in instance_ids]
        status = self.command_status.get(command.op, "Success")
        code = 0 if status == "Success" else 1
        return [
            CommandInvocation(
                iid,
                status,
                response_code=code,
                stdout=self._health_report(iid) if command.op == "health_check" else "",
                stderr="" if code == 0 else f"{command.op} failed on {iid}",
            )
            for iid in instance_ids
        ]

    def _health_report(self, instance_id: str) -> str:
        """The health script's sectioned report (see `restarter.domain.gpu.report`)."""
        inst = self.instances[instance_id]
        info = INSTANCE_TYPES[inst.instance_type]
        gpus = info.gpu_count if inst.visible_gpus is None else inst.visible_gpus
        rows = []
        for n in range(gpus):
            values = {
                "index": str(n),
                "pci.bus_id": f"00000000:{16 + n:02X}:1C.0",
                "uuid": f"GPU-{instance_id}-{n}",
                "name": f"NVIDIA {info.gpu_name}",
                "serial": f"13240{n:08d}",
                "ecc.errors.uncorrected.volatile.total": "0",
                "ecc.errors.uncorrected.aggregate.total": "0",
                "retired_pages.pending": "No",
                "remapped_rows.pending": "No",
                "remapped_rows.failure": "No",
                "temperature.gpu": "33",
                "power.draw": "52.10",
                "clocks_throttle_reasons.active": "0x0000000000000001",
                **inst.gpu_overrides.get(n, {}),
            }
            rows.append(", ".join(values[f] for f in QUERY_FIELDS))
        container = f"container: running {inst.container_image}" if inst.container_image else "container: missing"
        sections = {
            "gpus": rows,
            "nvlink": [],
            "kernel": inst.kernel_lines,
            "versions": ["driver_version: 535.54.03", "cuda_version: 12.2"],
            "processes": [],
            "workload": [container, *(f"port: {spec} open" for spec in inst.open_ports)],
        }
        lines = ["restarter-health: 2"]
        for name, body in sections.items():
            lines += [f"### section {name} rc=0", *body]
        lines += ["### section dcgm rc=127", "not installed", "### end"]
        return "\n".join(lines) + "\n"

    def agents_online(self, instance_ids: list[str]) -> dict[str, bool]:
        self._enter("agents_online")
        return {iid: self.instances[iid].state == "running" and iid not in self.agents_offline for iid in instance_ids}

    # ----- container environment
    def put_environment(self, parameter: str, values: dict[str, str]) -> int:
        self._enter("put_environment", parameter)
        versions = self.environments.setdefault(parameter, [])
        versions.append(dict(values))
        return len(versions)

    def get_environment(self, parameter: str, version: int | None = None) -> dict[str, str]:
        self._enter("get_environment")
        versions = self.environments.get(parameter)
        if not versions:
            raise NotFoundError("Environment not found", {"parameter": parameter})
        return dict(versions[(version or len(versions)) - 1])

    def delete_environment(self, parameter: str) -> None:
        self._enter("delete_environment", parameter)
        self.environments.pop(parameter, None)
