"""Realistic, time-scaled EC2 instance transitions for the simulated fleet (off by default).

moto changes instance states at once and treats a reboot as a no-op. With
``SimulatedAgentState.timings`` set to an ``InstanceTimings``, the patched moto shows what AWS
shows while a transition runs:

- ``StopInstances``: ``stopping`` for ``stop`` seconds (``Force=True``: the low end), then
  ``stopped``;
- ``StartInstances``: ``pending`` for ``start`` seconds, then ``running`` with status checks
  ``initializing`` for ``status_checks`` seconds, then ``ok``;
- ``RebootInstances``: ``running`` throughout, status checks ``initializing`` and the SSM agent
  ``ConnectionLost`` (commands end ``DeliveryTimedOut``) for ``reboot`` seconds.

Durations are simulated seconds drawn uniformly from each range with ``random.Random(jitter)``;
each lasts ``duration / time_scale`` real seconds (``time.monotonic()``).

How: moto's state stays its own (the final state, applied at once as moto does); the state keeps
one ``Transition`` per instance id, a list of phases with monotonic end times, and the read paths
(``Instance._state``, hence ``state``, ``state_code``, ``is_running``, filters and the serialized
``State``; ``instance_status`` / ``system_status``; the agent's online flag) show the current
phase's view until it ends. A transition that is over (or forgotten by ``reset()``) leaves
moto's state showing.

``SimulatedAgentState.never_comes_back(instance_id)`` (timings or not): every later start stays
``pending`` forever, every later reboot ends with status checks ``impaired`` and the agent
offline, until ``clear_never_comes_back``.

With timings set, the state rules of AWS apply too (``IncorrectInstanceState``): start only a
stopped (or already running/pending) instance, stop not a terminated one, reboot only a running
one, change ``InstanceType`` only on a stopped one.
"""

from __future__ import annotations

import copy
import math
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from moto.core.utils import utcnow
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models import EC2Backend
from moto.ec2.models.instances import Instance, InstanceState
from moto.ec2.responses import EC2Response

from . import _runtime
from .state import SimulatedAgentState

Range = tuple[float, float]
TransitionKind = Literal["stop", "start", "reboot"]
CheckStatus = Literal["initializing", "impaired"]

STOPPING = ("stopping", 64)
PENDING = ("pending", 0)
FOREVER = math.inf


def _check_range(name: str, value: Range) -> None:
    low, high = value
    if low < 0 or high < low:
        raise ValueError(f"{name} must be (low, high) with 0 <= low <= high, got {value!r}")


@dataclass(frozen=True)
class InstanceTimings:
    """How long instance transitions take, in SIMULATED seconds ``(low, high)``.

    ``jitter`` seeds the ``random.Random`` the durations are drawn from (reproducible runs);
    ``time_scale`` is simulated seconds per real second (the engine's ``time_scale``)."""

    stop: Range = (20.0, 60.0)
    start: Range = (30.0, 90.0)
    reboot: Range = (180.0, 300.0)
    status_checks: Range = (30.0, 90.0)
    jitter: int = 0
    time_scale: float = 1.0
    _rng: random.Random = field(init=False, repr=False, compare=False)
    _rng_lock: threading.Lock = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("stop", "start", "reboot", "status_checks"):
            _check_range(name, getattr(self, name))
        if not self.time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {self.time_scale!r}")
        object.__setattr__(self, "_rng", random.Random(self.jitter))
        object.__setattr__(self, "_rng_lock", threading.Lock())

    def draw(self, name: Literal["stop", "start", "reboot", "status_checks"]) -> float:
        """One simulated duration (seconds) from the ``name`` range."""
        low, high = getattr(self, name)
        with self._rng_lock:
            return float(self._rng.uniform(low, high))

    def real_seconds(self, simulated: float) -> float:
        return simulated / self.time_scale


@dataclass(frozen=True)
class Phase:
    """What one instance shows until ``until`` (monotonic seconds; ``math.inf`` = forever).

    ``state`` overrides the instance state (None: moto's own); ``checks`` overrides both status
    checks while the instance is running (None: as moto/the other faults say)."""

    until: float
    state: tuple[str, int] | None = None
    checks: CheckStatus | None = None
    agent_offline: bool = False


@dataclass(frozen=True)
class Transition:
    """The phases one instance goes through after one action, in order."""

    kind: TransitionKind
    phases: tuple[Phase, ...]
    started: datetime = field(default_factory=utcnow)

    def phase_at(self, now: float) -> Phase | None:
        """The phase showing at monotonic time ``now``; None once the transition is over."""
        for phase in self.phases:
            if now < phase.until:
                return phase
        return None

    @property
    def ends_at(self) -> float:
        return self.phases[-1].until if self.phases else 0.0


def plan_transition(
    timings: InstanceTimings | None,
    kind: TransitionKind,
    *,
    now: float,
    force: bool = False,
    stuck: bool = False,
) -> Transition | None:
    """The transition an action starts at monotonic ``now`` (None: moto's instant change).

    ``stuck`` (``never_comes_back``): a start stays pending forever; a reboot ends impaired. A
    stop is never stuck. Without timings the durations are zero, so only a stuck transition is
    returned."""
    if timings is None and not (stuck and kind != "stop"):
        return None

    def real(name: Literal["stop", "start", "reboot", "status_checks"], low_end: bool = False) -> float:
        if timings is None:
            return 0.0
        simulated = getattr(timings, name)[0] if low_end else timings.draw(name)
        return timings.real_seconds(simulated)

    if kind == "stop":
        return Transition(kind, (Phase(now + real("stop", low_end=force), state=STOPPING, agent_offline=True),))
    if kind == "start":
        if stuck:
            return Transition(kind, (Phase(FOREVER, state=PENDING, agent_offline=True),))
        running_at = now + real("start")
        return Transition(
            kind,
            (
                Phase(running_at, state=PENDING, agent_offline=True),
                Phase(running_at + real("status_checks"), checks="initializing"),
            ),
        )
    back_at = now + real("reboot")
    phases = [Phase(back_at, checks="initializing", agent_offline=True)]
    if stuck:
        phases.append(Phase(FOREVER, checks="impaired", agent_offline=True))
    return Transition(kind, tuple(phases))


# -- the moto patches -----------------------------------------------------------------------------

_request = threading.local()


def _incorrect_state(instance_id: str, verb: str) -> EC2ClientError:
    return EC2ClientError(
        "IncorrectInstanceState", f"The instance '{instance_id}' is not in a state from which it can be {verb}."
    )


def _install_state_property() -> None:
    """``Instance._state`` resolves the current phase; moto's own state lives in ``__dict__``."""

    def get_state(self: Instance) -> InstanceState:
        real: InstanceState = self.__dict__["_state"]
        state = _runtime.active_state()
        if state is None:
            return real
        phase = state.transition_phase(self.__dict__.get("id", ""))
        if phase is None or phase.state is None:
            return real
        return InstanceState(*phase.state)

    def set_state(self: Instance, value: InstanceState) -> None:
        self.__dict__["_state"] = value

    _runtime.patch(Instance, "_state", property(get_state, set_state))


def _install_status_checks() -> None:
    for name in ("instance_status", "system_status"):
        original: property = Instance.__dict__[name]

        def make(original: property) -> property:
            def getter(self: Instance) -> dict[str, Any]:
                state = _runtime.active_state()
                phase = state.transition_phase(self.id) if state is not None else None
                if phase is not None and phase.state is not None:  # stopping / pending
                    return {"Status": "not-applicable"}
                if phase is not None and phase.checks is not None and self.is_running():
                    return _check_view(phase.checks, state, self.id)
                result: dict[str, Any] = original.fget(self)  # type: ignore[misc]
                return result

            return property(getter)

        _runtime.patch(Instance, name, make(original))


def _check_view(status: CheckStatus, state: SimulatedAgentState | None, instance_id: str) -> dict[str, Any]:
    if status == "initializing":
        return {"Details": [{"Name": "reachability", "Status": "initializing"}], "Status": "initializing"}
    transition = state.transition(instance_id) if state is not None else None
    since = transition.started if transition is not None else utcnow()
    return {"Details": [{"Name": "reachability", "Status": "failed", "ImpairedSince": since}], "Status": "impaired"}


def _install_actions() -> None:
    original_start = Instance.start
    original_stop = Instance.stop
    original_reboot = Instance.reboot
    original_terminate = Instance.terminate

    def start(self: Instance) -> InstanceState:
        state = _runtime.active_state()
        if state is None:
            return original_start(self)
        with state.locked():
            previous = copy.copy(self._state)
            if state.timings is not None:
                if previous.name in ("running", "pending"):
                    return previous  # AWS: no change
                if previous.name != "stopped":
                    raise _incorrect_state(self.id, "started")
            state.clear_transition(self.id)
            original_start(self)
            if previous.name != "running":
                stuck = state.is_never_coming_back(self.id)
                planned = plan_transition(state.timings, "start", now=time.monotonic(), stuck=stuck)
                state.set_transition(self.id, planned)
            return previous

    def stop(self: Instance) -> InstanceState:
        state = _runtime.active_state()
        if state is None:
            return original_stop(self)
        force = bool(getattr(_request, "force", False))
        with state.locked():
            previous = copy.copy(self._state)
            timings = state.timings
            if timings is not None:
                if previous.name in ("terminated", "shutting-down"):
                    raise _incorrect_state(self.id, "stopped")
                if previous.name == "stopped":
                    return previous
                if previous.name == "stopping":
                    if force:  # a forced stop cuts a running stop short
                        current = state.transition(self.id)
                        forced = plan_transition(timings, "stop", now=time.monotonic(), force=True)
                        if current is not None and forced is not None and forced.ends_at < current.ends_at:
                            state.set_transition(self.id, forced)
                    return previous
            state.clear_transition(self.id)
            original_stop(self)
            state.set_transition(self.id, plan_transition(timings, "stop", now=time.monotonic(), force=force))
            return previous

    def reboot(self: Instance) -> None:
        state = _runtime.active_state()
        if state is None:
            return original_reboot(self)
        with state.locked():
            if state.timings is not None and self._state.name != "running":
                raise _incorrect_state(self.id, "rebooted")
            state.clear_transition(self.id)
            original_reboot(self)
            stuck = state.is_never_coming_back(self.id)
            state.set_transition(self.id, plan_transition(state.timings, "reboot", now=time.monotonic(), stuck=stuck))
        return None

    def terminate(self: Instance) -> InstanceState:
        state = _runtime.active_state()
        if state is None:
            return original_terminate(self)
        with state.locked():
            previous = copy.copy(self._state)
            state.clear_transition(self.id)
            original_terminate(self)
            return previous

    _runtime.patch(Instance, "start", start)
    _runtime.patch(Instance, "stop", stop)
    _runtime.patch(Instance, "reboot", reboot)
    _runtime.patch(Instance, "terminate", terminate)


def _install_backend_checks() -> None:
    original_start_instances = EC2Backend.start_instances
    original_stop_instances = EC2Backend.stop_instances
    original_reboot_instances = EC2Backend.reboot_instances
    original_modify = EC2Backend.modify_instance_attribute

    def refuse_unless(backend: EC2Backend, instance_ids: list[str], allowed: set[str], verb: str) -> None:
        """AWS checks every instance before changing any: refuse the whole call."""
        state = _runtime.active_state()
        if state is None or state.timings is None:
            return
        for instance in backend.get_multi_instances_by_id(instance_ids):
            if instance.state not in allowed:
                raise _incorrect_state(instance.id, verb)

    def start_instances(self: EC2Backend, instance_ids: list[str]) -> Any:
        refuse_unless(self, instance_ids, {"stopped", "running", "pending"}, "started")
        return original_start_instances(self, instance_ids)

    def stop_instances(self: EC2Backend, instance_ids: list[str]) -> Any:
        refuse_unless(self, instance_ids, {"running", "pending", "stopping", "stopped"}, "stopped")
        return original_stop_instances(self, instance_ids)

    def reboot_instances(self: EC2Backend, instance_ids: list[str]) -> Any:
        refuse_unless(self, instance_ids, {"running"}, "rebooted")
        return original_reboot_instances(self, instance_ids)

    def modify_instance_attribute(self: EC2Backend, instance_id: str, key: str, value: Any) -> Instance:
        state = _runtime.active_state()
        if state is not None and state.timings is not None and key == "instance_type":
            instance = self.get_instance(instance_id)
            if instance.state != "stopped":
                raise EC2ClientError(
                    "IncorrectInstanceState", f"The instance '{instance_id}' is not in the 'stopped' state."
                )
        return original_modify(self, instance_id, key, value)

    _runtime.patch(EC2Backend, "start_instances", start_instances)
    _runtime.patch(EC2Backend, "stop_instances", stop_instances)
    _runtime.patch(EC2Backend, "reboot_instances", reboot_instances)
    _runtime.patch(EC2Backend, "modify_instance_attribute", modify_instance_attribute)

    original_stop_action = EC2Response.stop_instances

    def stop_instances_action(self: EC2Response) -> Any:
        # Instance.stop cannot see the request: pass StopInstances' Force to it on this thread.
        _request.force = self._get_bool_param("Force", False)
        try:
            return original_stop_action(self)
        finally:
            _request.force = False

    _runtime.patch(EC2Response, "stop_instances", stop_instances_action)


def install() -> None:
    """Patch moto (after ``ec2_ext.install``: the status checks wrap its never-healthy ones)."""
    _install_state_property()
    _install_status_checks()
    _install_actions()
    _install_backend_checks()
