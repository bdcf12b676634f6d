"""Local extensions of moto 5.2.5 for the embedded runtime and the tests.

``install_extensions(state)`` patches moto (process-wide, once) and makes ``state`` the
``SimulatedAgentState`` the patches consult; calling it again only switches the active state.
While a state is active:

- every moto API call is counted in ``state.calls`` (parameters in ``state.last_requests``) and
  may be refused with the service's real throttling error (``state.throttle``);
- ``DescribeInstanceStatus`` honours ``set_never_healthy``;
- ``SendCommand`` refuses instances that are not running (``InvalidInstanceId``), answers
  ``Pending`` like AWS, and each instance's simulated SSM agent (``agent.py``) fills in the
  invocations that ``GetCommandInvocation`` / ``ListCommandInvocations`` / ``ListCommands`` read;
- with ``state.timings`` set (an ``InstanceTimings``; None by default), stop/start/reboot take
  realistic, time-scaled durations and ``never_comes_back`` strands an instance (``timing.py``).

Always present once installed, active state or not (moto lacks or gets them wrong):
``ListCommandInvocations``, ``DescribeInstanceInformation``, ``CreateReplaceRootVolumeTask``,
``DescribeReplaceRootVolumeTasks``, ``CreateSnapshots`` honouring ``CopyTagsFromSource``, and
snapshots keeping the ``VolumeSize`` they were taken at. With no active state
(``set_active_state(None)``) everything else behaves as moto ships; ``uninstall_extensions()``
removes every patch.

The embedded AWS's Step Functions shims (``stepfunctions_shims.py``) and the ASL parse cache
(``asl_cache.py``) are installed with them and read the engine set with ``set_active_engine``:
Lambda tasks run its handlers in-process (with no engine set they fail: "no local engine is
running"), Wait states and retry backoff run on its scaled clock (with none, real time).

Every patch is declared in its module's ``PATCHES`` and applied through ``REGISTRY``
(``registry.py``: once per process, in dependency order); ``compat.py`` refuses any moto but the
pinned version and lists every target (``ec2_timing_ext.py`` holds the patches for ``timing.py``).
"""

from __future__ import annotations

from . import _runtime, asl_cache, compat, ec2_ext, ec2_timing_ext, ssm_ext, stepfunctions_shims, throttling
from ._runtime import LambdaDispatcher, SimulatedClock, active_state, set_active_state
from .agent import ARGS_MARKER, CONTAINER_NAME, OP_MARKER, parse_markers
from .data import default_fatal_xid_line, nvidia_smi_name, xid_line, xid_samples
from .registry import PatchRegistry
from .state import AgentCommand, CommandFault, ContainerState, SimulatedAgentState, ThrottleRefusal
from .timing import InstanceTimings

__all__ = [
    "ARGS_MARKER",
    "CONTAINER_NAME",
    "OP_MARKER",
    "REGISTRY",
    "AgentCommand",
    "CommandFault",
    "ContainerState",
    "InstanceTimings",
    "LambdaDispatcher",
    "SimulatedAgentState",
    "SimulatedClock",
    "ThrottleRefusal",
    "active_state",
    "default_fatal_xid_line",
    "install_extensions",
    "nvidia_smi_name",
    "parse_markers",
    "set_active_engine",
    "set_active_state",
    "uninstall_extensions",
    "xid_line",
    "xid_samples",
]


# Declaration order is application order, except where a patch names others in ``after``.
REGISTRY = PatchRegistry(
    [
        *throttling.PATCHES,
        *ssm_ext.PATCHES,
        *ec2_ext.PATCHES,
        *ec2_timing_ext.PATCHES,
        *stepfunctions_shims.PATCHES,
        *asl_cache.PATCHES,
    ]
)


def install_extensions(fleet: SimulatedAgentState) -> None:
    """Patch moto once per process and make ``fleet`` the active state (idempotent)."""
    if not REGISTRY.is_applied():
        compat.require_pinned_moto()
        REGISTRY.apply()
    _runtime.set_active_state(fleet)


def set_active_engine(functions: LambdaDispatcher | None, clock: SimulatedClock | None) -> None:
    """Where moto's Lambda tasks run, and the clock Wait states and retry backoff run on
    (the running ``LocalAws``'s function registry and scaled clock)."""
    _runtime.set_active_functions(functions)
    _runtime.set_active_clock(clock)


def uninstall_extensions() -> None:
    """Undo every patch and forget the active state (moto as shipped)."""
    REGISTRY.undo()
    _runtime.set_active_state(None)
