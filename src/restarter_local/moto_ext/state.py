"""The fault-injection and simulated-agent state the moto extensions consult."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

from .data import default_fatal_xid_line
from .gpu_sim import GpuFault, GpuView, Rung, after_rung

if TYPE_CHECKING:  # timing.py patches moto and imports this module
    from .timing import InstanceTimings, Phase, Transition


class ContainerState(TypedDict):
    """The workload container the simulated agent runs on one instance."""

    image: str
    ports: list[dict[str, Any]]
    running: bool


@dataclass
class CommandFault:
    """``fail_command``: the op fails ``remaining`` more times (None = forever)."""

    op: str
    stderr: str
    remaining: int | None
    exit_code: int = 1


@dataclass(frozen=True)
class AgentCommand:
    """One command the simulated agent received (in ``SimulatedAgentState.command_log``)."""

    command_id: str
    instance_id: str
    document_name: str
    op: str | None
    args: dict[str, Any]
    status: str
    status_details: str


@dataclass(frozen=True)
class ThrottleRefusal:
    """A throttled call; ``error_code`` None = the service's own throttling error."""

    error_code: str | None = None


@dataclass
class _Throttle:
    remaining: int
    error_code: str | None = None
    let_through: int = 0  # calls that pass before the refusals start


@dataclass
class SimulatedAgentState:
    """What the simulated fleet looks like beyond moto: faults, SSM agents and containers.

    Keys are instance ids (unique across moto accounts and regions in practice). The object is
    plain and thread-safe; ``install_extensions(state)`` makes it the one the patched moto
    consults. Tests read ``calls``, ``last_requests``, ``throttled_calls``, ``containers`` and
    ``command_log``.

    ``timings`` (an ``InstanceTimings``, see ``timing.py``) makes stop/start/reboot take
    realistic, time-scaled durations; None (the default) keeps moto's instant transitions.
    """

    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    last_requests: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    throttled_calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    containers: dict[str, ContainerState] = field(default_factory=dict)
    command_log: list[AgentCommand] = field(default_factory=list)
    timings: InstanceTimings | None = None
    _throttles: dict[tuple[str, str], _Throttle] = field(default_factory=dict, repr=False)
    _never_healthy: set[str] = field(default_factory=set, repr=False)
    _agent_offline: set[str] = field(default_factory=set, repr=False)
    _command_faults: dict[tuple[str, str], CommandFault] = field(default_factory=dict, repr=False)
    _xids: dict[str, list[str]] = field(default_factory=dict, repr=False)
    _closed_ports: dict[str, set[tuple[str, int]]] = field(default_factory=dict, repr=False)
    _last_ping: dict[str, Any] = field(default_factory=dict, repr=False)
    _transitions: dict[str, Transition] = field(default_factory=dict, repr=False)
    _never_comes_back: set[str] = field(default_factory=set, repr=False)
    _gpu_faults: dict[str, list[GpuFault]] = field(default_factory=dict, repr=False)
    _boots: dict[str, float] = field(default_factory=dict, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    # -- API throttling ------------------------------------------------------------------------

    def throttle(
        self, service: str, action: str, times: int = 1, *, error_code: str | None = None, after: int = 0
    ) -> None:
        """The next ``times`` calls of ``service``/``action`` (e.g. "ec2", "RebootInstances") are
        refused with the service's throttling error (EC2 ``RequestLimitExceeded`` HTTP 503,
        others ``ThrottlingException`` HTTP 400; ``error_code`` overrides the code). With
        ``after``, that many calls pass first (a throttle in the middle of a multi-call step)."""
        if times < 0 or after < 0:
            raise ValueError("times and after must be >= 0")
        with self._lock:
            key = (service.lower(), action)
            if times == 0:
                self._throttles.pop(key, None)
            else:
                self._throttles[key] = _Throttle(times, error_code, after)

    def record_call(self, service: str, action: str, params: dict[str, Any] | None = None) -> ThrottleRefusal | None:
        """Count one call (and keep its parameters in ``last_requests``); return how to refuse
        it, or None to let it through."""
        key = (service.lower(), action)
        with self._lock:
            self.calls[key] += 1
            self.last_requests[key] = dict(params or {})
            rule = self._throttles.get(key)
            if rule is None or rule.remaining <= 0:
                return None
            if rule.let_through > 0:
                rule.let_through -= 1
                return None
            rule.remaining -= 1
            if rule.remaining == 0:
                del self._throttles[key]
            self.throttled_calls[key] += 1
            return ThrottleRefusal(rule.error_code)

    # -- EC2 status checks ---------------------------------------------------------------------

    def set_never_healthy(self, instance_id: str) -> None:
        """DescribeInstanceStatus shows this instance ``initializing`` even when running."""
        with self._lock:
            self._never_healthy.add(instance_id)

    def clear_never_healthy(self, instance_id: str) -> None:
        with self._lock:
            self._never_healthy.discard(instance_id)

    def is_never_healthy(self, instance_id: str) -> bool:
        with self._lock:
            return instance_id in self._never_healthy

    # -- instance transitions (timing.py) -------------------------------------------------------

    def never_comes_back(self, instance_id: str) -> None:
        """From now on every start of this instance stays ``pending`` forever and every reboot
        ends with status checks ``impaired`` (agent offline), until ``clear_never_comes_back``."""
        with self._lock:
            self._never_comes_back.add(instance_id)

    def clear_never_comes_back(self, instance_id: str) -> None:
        """Later transitions end normally (one already stuck stays stuck until the next action)."""
        with self._lock:
            self._never_comes_back.discard(instance_id)

    def is_never_coming_back(self, instance_id: str) -> bool:
        with self._lock:
            return instance_id in self._never_comes_back

    def locked(self) -> threading.RLock:
        """The state's lock, for a read-modify-write of an instance and its transition."""
        return self._lock

    def set_transition(self, instance_id: str, transition: Transition | None) -> None:
        with self._lock:
            if transition is None:
                self._transitions.pop(instance_id, None)
            else:
                self._transitions[instance_id] = transition

    def clear_transition(self, instance_id: str) -> None:
        self.set_transition(instance_id, None)

    def transition(self, instance_id: str) -> Transition | None:
        """The instance's transition while it runs (None once over)."""
        with self._lock:
            return self._transitions.get(instance_id) if self.transition_phase(instance_id) else None

    def transition_phase(self, instance_id: str) -> Phase | None:
        """What the instance shows now, if a transition is running (a finished one is dropped)."""
        if not self._transitions:
            return None
        with self._lock:
            transition = self._transitions.get(instance_id)
            if transition is None:
                return None
            phase = transition.phase_at(time.monotonic())
            if phase is None:
                del self._transitions[instance_id]
            return phase

    # -- SSM agent -----------------------------------------------------------------------------

    def set_agent_offline(self, instance_id: str, offline: bool = True) -> None:
        """The instance's SSM agent reports ``ConnectionLost``; commands end ``DeliveryTimedOut``."""
        with self._lock:
            if offline:
                self._agent_offline.add(instance_id)
            else:
                self._agent_offline.discard(instance_id)

    def is_agent_offline(self, instance_id: str) -> bool:
        """Offline by ``set_agent_offline``, or while a transition (reboot, stop, boot) runs."""
        with self._lock:
            if instance_id in self._agent_offline:
                return True
            phase = self.transition_phase(instance_id)
            return phase is not None and phase.agent_offline

    def fail_command(
        self,
        instance_id: str,
        op: str,
        stderr: str = "simulated failure",
        times: int | None = None,
        *,
        exit_code: int = 1,
    ) -> None:
        """Our commands with ``op`` fail on this instance (Status Failed, ResponseCode ``exit_code``,
        StandardErrorContent ``stderr``), ``times`` times or forever (None)."""
        with self._lock:
            self._command_faults[(instance_id, op)] = CommandFault(op, stderr, times, exit_code)

    def clear_command_fault(self, instance_id: str, op: str) -> None:
        with self._lock:
            self._command_faults.pop((instance_id, op), None)

    def take_command_fault(self, instance_id: str, op: str) -> CommandFault | None:
        """The fault to apply to one command now (consumes one of its ``times``)."""
        with self._lock:
            fault = self._command_faults.get((instance_id, op))
            if fault is None:
                return None
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del self._command_faults[(instance_id, op)]
            return fault

    def inject_xid(self, instance_id: str, line: str | None = None) -> None:
        """Health checks on this instance report a fatal Xid kernel line (default: a real Xid 79)."""
        with self._lock:
            self._xids.setdefault(instance_id, []).append(line or default_fatal_xid_line())

    def clear_xid(self, instance_id: str) -> None:
        with self._lock:
            self._xids.pop(instance_id, None)

    def xid_lines(self, instance_id: str) -> list[str]:
        with self._lock:
            return list(self._xids.get(instance_id, []))

    # -- simulated GPUs (gpu_sim.py) ------------------------------------------------------------

    def inject_gpu_fault(self, instance_id: str, fault: GpuFault) -> None:
        """Health checks show ``fault`` on the instance until a strong enough recovery rung (a
        ``reset_gpu`` command, a reboot, a stop and start) cures it or it is cleared."""
        fault.injected_at = self._simulated_seconds()
        with self._lock:
            self._gpu_faults.setdefault(instance_id, []).append(fault)

    def clear_gpu_faults(self, instance_id: str) -> None:
        with self._lock:
            self._gpu_faults.pop(instance_id, None)

    def gpu_faults(self, instance_id: str) -> list[GpuFault]:
        with self._lock:
            return list(self._gpu_faults.get(instance_id, []))

    def record_boot(self, instance_id: str, rung: Rung, at: float) -> None:
        """The instance boots at monotonic ``at`` after ``rung`` (a reboot, or a start after a
        stop: a new host), which cures the faults that rung cures."""
        # on the simulated clock: now, plus what is left of the boot (realistic timings)
        booted = self._simulated_seconds() + max(0.0, at - time.monotonic()) * self._timing_scale()
        with self._lock:
            self._boots[instance_id] = booted
            self._cure(instance_id, rung, None)

    def last_boot(self, instance_id: str) -> float | None:
        """Simulated time (seconds) of the instance's last boot seen (None: none since launch)."""
        with self._lock:
            return self._boots.get(instance_id)

    def reset_gpus(self, instance_id: str, slots: set[int]) -> None:
        """``nvidia-smi -r`` reset these GPU slots: the reset-class faults on them are cured."""
        with self._lock:
            self._cure(instance_id, "reset_gpu", slots)

    def _cure(self, instance_id: str, rung: Rung, slots: set[int] | None) -> None:
        faults = self._gpu_faults.get(instance_id)
        if faults:
            self._gpu_faults[instance_id] = after_rung(faults, rung, slots)

    def gpu_view(self, instance_id: str) -> GpuView:
        """The instance's GPU faults as a command sees them now. Times are the engine's simulated
        seconds (a restart's Wait states move them), so "late by 300 s" means 300 s of the restart."""
        now = self._simulated_seconds()
        with self._lock:
            return GpuView(
                faults=tuple(self._gpu_faults.get(instance_id, [])),
                now=now,
                boot=self._boots.get(instance_id),
                scale=1.0,
                legacy_xids=tuple(self._xids.get(instance_id, [])),
            )

    def _timing_scale(self) -> float:
        return self.timings.time_scale if self.timings is not None else 1.0

    def _simulated_seconds(self) -> float:
        """The engine's clock as seconds (the restart's own when called for one); without an
        engine, real time at the timings' scale (the scale the transitions run at)."""
        from ._runtime import active_clock

        clock = active_clock()
        return clock.now().timestamp() if clock is not None else time.monotonic() * self._timing_scale()

    def close_port(self, instance_id: str, port: int, protocol: str = "tcp") -> None:
        """Health checks on this instance report ``port`` (the container's internal port) closed."""
        with self._lock:
            self._closed_ports.setdefault(instance_id, set()).add((protocol.lower(), int(port)))

    def open_port(self, instance_id: str, port: int, protocol: str = "tcp") -> None:
        with self._lock:
            self._closed_ports.get(instance_id, set()).discard((protocol.lower(), int(port)))

    def is_port_closed(self, instance_id: str, port: int, protocol: str = "tcp") -> bool:
        with self._lock:
            return (protocol.lower(), int(port)) in self._closed_ports.get(instance_id, set())

    # -- simulated containers ------------------------------------------------------------------

    def start_container(self, instance_id: str, image: str, ports: list[dict[str, Any]]) -> None:
        with self._lock:
            self.containers[instance_id] = {"image": image, "ports": list(ports), "running": True}

    def stop_container(self, instance_id: str) -> bool:
        """Mark the container stopped; True if it was running."""
        with self._lock:
            container = self.containers.get(instance_id)
            if container is None or not container["running"]:
                return False
            container["running"] = False
            return True

    def log_command(self, entry: AgentCommand) -> None:
        with self._lock:
            self.command_log.append(entry)

    # -- bookkeeping ---------------------------------------------------------------------------

    def last_ping(self, instance_id: str, online: bool, now: Any) -> Any:
        """LastPingDateTime: now while online; the first time seen offline while offline."""
        with self._lock:
            if online:
                self._last_ping.pop(instance_id, None)
                return now
            return self._last_ping.setdefault(instance_id, now)

    def reset(self) -> None:
        """Forget every fault, counter, container, log entry, boot and running transition
        (instances show moto's own state again); ``timings`` stays."""
        with self._lock:
            self.calls.clear()
            self.last_requests.clear()
            self.throttled_calls.clear()
            self.containers.clear()
            self.command_log.clear()
            self._throttles.clear()
            self._never_healthy.clear()
            self._agent_offline.clear()
            self._command_faults.clear()
            self._xids.clear()
            self._closed_ports.clear()
            self._last_ping.clear()
            self._transitions.clear()
            self._never_comes_back.clear()
            self._gpu_faults.clear()
            self._boots.clear()
