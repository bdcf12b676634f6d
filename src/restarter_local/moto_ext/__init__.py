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
"""

from __future__ import annotations

from . import _runtime, ec2_ext, ssm_ext, throttling, timing
from ._runtime import active_state, set_active_state
from .agent import ARGS_MARKER, CONTAINER_NAME, OP_MARKER, parse_markers
from .data import default_fatal_xid_line, nvidia_smi_name, xid_line, xid_samples
from .state import AgentCommand, CommandFault, ContainerState, SimulatedAgentState, ThrottleRefusal
from .timing import InstanceTimings

__all__ = [
    "ARGS_MARKER",
    "CONTAINER_NAME",
    "OP_MARKER",
    "AgentCommand",
    "CommandFault",
    "ContainerState",
    "InstanceTimings",
    "SimulatedAgentState",
    "ThrottleRefusal",
    "active_state",
    "default_fatal_xid_line",
    "install_extensions",
    "nvidia_smi_name",
    "parse_markers",
    "set_active_state",
    "uninstall_extensions",
    "xid_line",
    "xid_samples",
]


def install_extensions(fleet: SimulatedAgentState) -> None:
    """Patch moto once per process and make ``fleet`` the active state (idempotent)."""
    with _runtime.LOCK:
        if not _runtime.is_patched():
            try:
                throttling.install()
                ssm_ext.install()
                ec2_ext.install()
                timing.install()
            except BaseException:
                _runtime.unpatch_all()
                raise
        _runtime.set_active_state(fleet)


def uninstall_extensions() -> None:
    """Undo every patch and forget the active state (moto as shipped)."""
    with _runtime.LOCK:
        _runtime.unpatch_all()
        _runtime.set_active_state(None)
