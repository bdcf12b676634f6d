"""The simulated SSM agent: what one instance answers to one SendCommand.

Our EC2 adapter sends ``AWS-RunShellScript`` whose ``commands`` start with two marker lines::

    # restarter-op: <op>
    # restarter-args: <one-line JSON object>

The agent does not run the script; it answers by ``op`` from the instance's simulated state
(the GPUs' answers, ``health_check`` and ``reset_gpu``, come from ``gpu_sim.py``).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from .gpu_sim import health_report, instance_gpus, reset_gpus
from .state import AgentCommand, SimulatedAgentState

OP_MARKER = "# restarter-op:"
ARGS_MARKER = "# restarter-args:"

RUN_SHELL_SCRIPT = "AWS-RunShellScript"
RUN_PATCH_BASELINE = "AWS-RunPatchBaseline"

# Typical durations (seconds) the invocations report in ExecutionElapsedTime.
_TYPICAL_STOP_SECONDS = 12
_ELAPSED = {"start_services": 8.0, "health_check": 2.0, "reset_gpu": 14.0, RUN_PATCH_BASELINE: 95.0}
CONTAINER_NAME = "restarter-workload"


@dataclass
class Outcome:
    """The result of one invocation on one instance."""

    status: str = "Success"
    status_details: str = "Success"
    response_code: int = 0
    stdout: str = ""
    stderr: str = ""
    elapsed_seconds: float = 1.0
    plugin_name: str = "aws:runShellScript"
    delivered: bool = True
    op: str | None = None
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.status != "Success"


class MarkerError(ValueError):
    """The command has an op marker but its args line is not a JSON object."""


def script_lines(parameters: dict[str, Any] | None) -> list[str]:
    """The lines of ``commands`` (each element may itself hold several lines)."""
    commands = (parameters or {}).get("commands") or []
    if isinstance(commands, str):
        commands = [commands]
    lines: list[str] = []
    for element in commands:
        lines.extend(str(element).splitlines() or [""])
    return lines


def parse_markers(parameters: dict[str, Any] | None) -> tuple[str | None, dict[str, Any]]:
    """``(op, args)`` from the first two lines, or ``(None, {})`` for a command without markers."""
    lines = script_lines(parameters)
    if not lines or not lines[0].startswith(OP_MARKER):
        return None, {}
    op = lines[0][len(OP_MARKER) :].strip()
    if len(lines) < 2 or not lines[1].startswith(ARGS_MARKER):
        return op, {}
    raw = lines[1][len(ARGS_MARKER) :].strip()
    try:
        args = json.loads(raw) if raw else {}
    except json.JSONDecodeError as exc:
        raise MarkerError(f"restarter-args is not valid JSON: {exc}") from exc
    if not isinstance(args, dict):
        raise MarkerError("restarter-args must be a JSON object")
    return op, args


def gpu_lines(ec2_backend: Any, instance: Any) -> list[str]:
    """``nvidia-smi -L`` lines for the instance's type, from moto's DescribeInstanceTypes GpuInfo
    (UUIDs stable per instance and GPU index)."""
    return [f"GPU {g.slot}: {g.name} (UUID: {g.uuid})" for g in instance_gpus(ec2_backend, instance)]


def _ports(args: dict[str, Any]) -> list[dict[str, Any]]:
    ports = args.get("ports") or []
    return [dict(port) for port in ports if isinstance(port, dict)]


def _port_key(port: dict[str, Any]) -> tuple[str, int]:
    return str(port.get("protocol") or "tcp").lower(), int(port.get("internal_port") or 0)


def _stop_services(state: SimulatedAgentState, instance_id: str, args: dict[str, Any]) -> Outcome:
    # The script: `docker stop --time <grace> restarter-workload` when the container exists (docker
    # prints its name), then `echo stopped services within <grace>s`.
    grace = int(args.get("grace_seconds") or 0)
    exists = instance_id in state.containers
    was_running = state.stop_container(instance_id)
    stdout = f"{CONTAINER_NAME}\n" if exists else ""
    took = float(max(1, min(grace, _TYPICAL_STOP_SECONDS))) if was_running else 1.0
    return Outcome(stdout=f"{stdout}stopped services within {grace}s\n", elapsed_seconds=took)


def _pull_lines(image: str) -> list[str]:
    """What `docker pull <image>` prints for an image already in the local cache."""
    name, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "latest")
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    elif len(parts) == 1:
        parts = ["library", *parts]
    digest = hashlib.sha256(image.encode()).hexdigest()
    return [
        f"{tag}: Pulling from {'/'.join(parts)}",
        f"Digest: sha256:{digest}",
        f"Status: Image is up to date for {image}",
        image,
    ]


def _start_services(state: SimulatedAgentState, instance_id: str, args: dict[str, Any]) -> Outcome:
    image = args.get("image")
    if not image:
        return Outcome(
            status="Failed",
            status_details="Failed",
            response_code=1,
            stderr='"docker run" requires at least 1 argument.\n',
        )
    state.start_container(instance_id, str(image), _ports(args))
    lines = [*_pull_lines(str(image)), secrets.token_hex(32), f"started {image}"]
    return Outcome(stdout="\n".join(lines) + "\n", elapsed_seconds=_ELAPSED["start_services"])


def _workload_lines(state: SimulatedAgentState, instance_id: str, args: dict[str, Any]) -> list[str]:
    """The workload section: `docker inspect`'s state and image, then each port probed where
    clients connect (the published host port, see the EC2 adapter)."""
    container = state.containers.get(instance_id)
    if container is None:
        lines = ["container: missing"]
    elif container["running"]:
        lines = [f"container: running {container['image']}"]
    else:
        lines = [f"container: exited {container['image']}"]
    published = {_port_key(port) for port in (container["ports"] if container else [])}
    running = bool(container and container["running"])
    for port in _ports(args):
        protocol, number = _port_key(port)
        is_open = running and (protocol, number) in published
        if state.is_port_closed(instance_id, number, protocol):
            is_open = False
        host_port = int(port.get("external_port") or number)
        lines.append(f"port: {protocol}/{host_port} {'open' if is_open else 'closed'}")
    return lines


def _workload_running(state: SimulatedAgentState, instance_id: str) -> bool:
    container = state.containers.get(instance_id)
    return bool(container and container["running"])


def health_check_stdout(state: SimulatedAgentState, ec2_backend: Any, instance: Any, args: dict[str, Any]) -> str:
    """The sectioned health report (``restarter-health: 2``) of the instance's simulated GPUs."""
    return health_report(
        instance_gpus(ec2_backend, instance),
        state.gpu_view(instance.id),
        busy=_workload_running(state, instance.id),
        workload=_workload_lines(state, instance.id, args),
    )


def _reset_gpu(state: SimulatedAgentState, ec2_backend: Any, instance: Any, args: dict[str, Any]) -> Outcome:
    """`nvidia-smi -r`: refused while the workload holds the GPUs; a reset cures reset-class faults."""
    result = reset_gpus(
        instance_gpus(ec2_backend, instance),
        state.gpu_view(instance.id),
        busy=_workload_running(state, instance.id),
        which=args.get("gpus", "all"),
    )
    if result.reset_slots:
        state.reset_gpus(instance.id, set(result.reset_slots))
    if result.rc != 0:
        return Outcome(
            status="Failed",
            status_details="Failed",
            response_code=result.rc,
            stdout=result.stdout,
            stderr=result.stderr,
            elapsed_seconds=_ELAPSED["reset_gpu"],
        )
    return Outcome(stdout=result.stdout, elapsed_seconds=_ELAPSED["reset_gpu"])


def _patch_baseline(parameters: dict[str, Any]) -> Outcome:
    operation = ((parameters.get("Operation") or ["Scan"])[0]) or "Scan"
    installed = 12 if operation == "Install" else 0
    missing = 0 if operation == "Install" else 12
    stdout = (
        "Patch group: default\n"
        f"Operation type: {operation}\n"
        "Patch baseline: pb-0c10e65780EXAMPLE (AWS-UbuntuDefaultPatchBaseline)\n"
        f"Installed: {installed}, InstalledOther: 318, InstalledPendingReboot: 0, InstalledRejected: 0, "
        f"Missing: {missing}, Failed: 0, NotApplicable: 2291\n"
    )
    return Outcome(stdout=stdout, elapsed_seconds=_ELAPSED[RUN_PATCH_BASELINE], plugin_name="PatchLinux")


def answer(
    state: SimulatedAgentState,
    ec2_backend: Any,
    instance: Any,
    document_name: str,
    parameters: dict[str, Any],
) -> Outcome:
    """What ``instance`` answers to one command (applies faults and updates the containers)."""
    plugin = "PatchLinux" if document_name == RUN_PATCH_BASELINE else "aws:runShellScript"
    marker_error = None
    try:
        op, args = parse_markers(parameters)
    except MarkerError as exc:
        op, args, marker_error = None, {}, str(exc)
    if instance is None or instance.state != "running" or state.is_agent_offline(instance.id):
        # Real SSM keeps the invocation Pending/Delayed until the delivery timeout, then reports
        # "Delivery Timed Out". moto is instant, so it ends at once: Failed / DeliveryTimedOut.
        return Outcome(
            status="Failed",
            status_details="DeliveryTimedOut",
            response_code=-1,
            elapsed_seconds=0.0,
            plugin_name=plugin,
            delivered=False,
            op=op,
            args=args,
        )
    instance_id = instance.id
    if marker_error is not None:
        return Outcome(
            status="Failed",
            status_details="Failed",
            response_code=1,
            stderr=f"{marker_error}\n",
            plugin_name=plugin,
        )
    fault = state.take_command_fault(instance_id, op or document_name)
    if fault is not None:
        return Outcome(
            status="Failed",
            status_details="Failed",
            response_code=fault.exit_code,
            stderr=fault.stderr,
            plugin_name=plugin,
            op=op,
            args=args,
        )
    if op is None:
        outcome = _patch_baseline(parameters) if document_name == RUN_PATCH_BASELINE else Outcome()
    elif op == "stop_services":
        outcome = _stop_services(state, instance_id, args)
    elif op == "start_services":
        outcome = _start_services(state, instance_id, args)
    elif op == "health_check":
        outcome = Outcome(
            stdout=health_check_stdout(state, ec2_backend, instance, args),
            elapsed_seconds=_ELAPSED["health_check"],
        )
    elif op == "reset_gpu":
        outcome = _reset_gpu(state, ec2_backend, instance, args)
    else:
        outcome = Outcome(stdout=f"{op}: done\n")
    outcome.plugin_name = plugin
    outcome.op, outcome.args = op, args
    return outcome


def log_entry(command_id: str, instance_id: str, document_name: str, outcome: Outcome) -> AgentCommand:
    return AgentCommand(
        command_id=command_id,
        instance_id=instance_id,
        document_name=document_name,
        op=outcome.op,
        args=outcome.args,
        status=outcome.status,
        status_details=outcome.status_details,
    )
