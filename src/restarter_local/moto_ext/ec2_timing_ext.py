"""The moto patches that make EC2 instances go through ``timing``'s transitions.

moto's state stays its own (the final state, applied at once as moto does); the active state
keeps one ``Transition`` per instance, and the read paths (``Instance._state``, hence ``state``,
``state_code``, ``is_running``, filters and the serialized ``State``; ``instance_status`` /
``system_status``) show the current phase until it ends. The actions plan the transitions, and
with timings set AWS's state rules apply (``IncorrectInstanceState``). A reboot, and a start after
a stop (EC2 moves the instance to a new host), record the instance's boot and cure the GPU faults
that rung cures (``SimulatedAgentState.record_boot``, rules in ``gpu_sim.py``).
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from typing import Any

from moto.core.utils import utcnow
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models import EC2Backend
from moto.ec2.models.instances import Instance, InstanceState
from moto.ec2.responses import EC2Response

from . import _runtime
from .ec2_ext import NEVER_HEALTHY_INSTANCE_STATUS, NEVER_HEALTHY_SYSTEM_STATUS
from .registry import adds, wraps
from .state import SimulatedAgentState
from .timing import CheckStatus, Transition, plan_transition

_Action = Callable[[Instance], InstanceState]  # Instance.start / stop / terminate
_request = threading.local()


def _incorrect_state(instance_id: str, verb: str) -> EC2ClientError:
    return EC2ClientError(
        "IncorrectInstanceState", f"The instance '{instance_id}' is not in a state from which it can be {verb}."
    )


# -- what an instance shows -----------------------------------------------------------------------


def _get_state(self: Instance) -> InstanceState:
    real: InstanceState = self.__dict__["_state"]
    state = _runtime.active_state()
    if state is None:
        return real
    phase = state.transition_phase(self.__dict__.get("id", ""))
    if phase is None or phase.state is None:
        return real
    return InstanceState(*phase.state)


def _set_state(self: Instance, value: InstanceState) -> None:
    self.__dict__["_state"] = value


def _wrap_status_check(original: property) -> property:
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


def _check_view(status: CheckStatus, state: SimulatedAgentState | None, instance_id: str) -> dict[str, Any]:
    if status == "initializing":
        return {"Details": [{"Name": "reachability", "Status": "initializing"}], "Status": "initializing"}
    transition = state.transition(instance_id) if state is not None else None
    since = transition.started if transition is not None else utcnow()
    return {"Details": [{"Name": "reachability", "Status": "failed", "ImpairedSince": since}], "Status": "impaired"}


# -- the instance actions -------------------------------------------------------------------------


def _boots_at(planned: Transition | None) -> float:
    """When the node's OS is up again (monotonic): the end of the transition's first phase
    (pending, or a reboot's offline agent); now for moto's instant change."""
    return planned.phases[0].until if planned is not None and planned.phases else time.monotonic()


def _wrap_start(original_start: _Action) -> _Action:
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
                if previous.name in ("stopped", "stopping"):  # a stop and start: a new host
                    state.record_boot(self.id, "stop_start", _boots_at(planned))
            return previous

    return start


def _wrap_stop(original_stop: _Action) -> _Action:
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

    return stop


def _wrap_reboot(original_reboot: Callable[[Instance], None]) -> Callable[[Instance], None]:
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
            planned = plan_transition(state.timings, "reboot", now=time.monotonic(), stuck=stuck)
            state.set_transition(self.id, planned)
            state.record_boot(self.id, "reboot", _boots_at(planned))
        return None

    return reboot


def _wrap_terminate(original_terminate: _Action) -> _Action:
    def terminate(self: Instance) -> InstanceState:
        state = _runtime.active_state()
        if state is None:
            return original_terminate(self)
        with state.locked():
            previous = copy.copy(self._state)
            state.clear_transition(self.id)
            original_terminate(self)
            return previous

    return terminate


# -- the backend's state rules --------------------------------------------------------------------


def _refuse_unless(backend: EC2Backend, instance_ids: list[str], allowed: set[str], verb: str) -> None:
    """AWS checks every instance before changing any: refuse the whole call."""
    state = _runtime.active_state()
    if state is None or state.timings is None:
        return
    for instance in backend.get_multi_instances_by_id(instance_ids):
        if instance.state not in allowed:
            raise _incorrect_state(instance.id, verb)


def _wrap_instances_call(allowed: set[str], verb: str) -> Any:
    def wrap(original: Any) -> Any:
        def call(self: EC2Backend, instance_ids: list[str]) -> Any:
            _refuse_unless(self, instance_ids, allowed, verb)
            return original(self, instance_ids)

        return call

    return wrap


def _wrap_modify_instance_attribute(original: Callable[..., Instance]) -> Callable[..., Instance]:
    def modify_instance_attribute(self: EC2Backend, instance_id: str, key: str, value: Any) -> Instance:
        state = _runtime.active_state()
        if state is not None and state.timings is not None and key == "instance_type":
            instance = self.get_instance(instance_id)
            if instance.state != "stopped":
                raise EC2ClientError(
                    "IncorrectInstanceState", f"The instance '{instance_id}' is not in the 'stopped' state."
                )
        return original(self, instance_id, key, value)

    return modify_instance_attribute


def _wrap_stop_instances_action(original: Any) -> Any:
    def stop_instances_action(self: EC2Response) -> Any:
        # Instance.stop cannot see the request: pass StopInstances' Force to it on this thread.
        _request.force = self._get_bool_param("Force", False)
        try:
            return original(self)
        finally:
            _request.force = False

    return stop_instances_action


_INSTANCES = "moto.ec2.models.instances"
_MODELS = "moto.ec2.models"

PATCHES = (
    adds(
        "timing.instance_state",
        _INSTANCES,
        "Instance",
        "_state",
        "an instance shows its transition's phase (stopping, pending) over moto's instant final state, "
        "which moto keeps as the instance attribute `_state` (now in the instance's __dict__)",
        property(_get_state, _set_state),
    ),
    wraps(
        "timing.instance_status",
        _INSTANCES,
        "Instance",
        "instance_status",
        "status checks read not-applicable / initializing / impaired while a transition runs",
        _wrap_status_check,
        after=[NEVER_HEALTHY_INSTANCE_STATUS],  # a transition's view wins over never-healthy
    ),
    wraps(
        "timing.system_status",
        _INSTANCES,
        "Instance",
        "system_status",
        "status checks read not-applicable / initializing / impaired while a transition runs",
        _wrap_status_check,
        after=[NEVER_HEALTHY_SYSTEM_STATUS],  # a transition's view wins over never-healthy
    ),
    wraps(
        "timing.instance_start",
        _INSTANCES,
        "Instance",
        "start",
        "a start plans a pending phase, then initializing status checks (or stays pending if stranded)",
        _wrap_start,
    ),
    wraps(
        "timing.instance_stop",
        _INSTANCES,
        "Instance",
        "stop",
        "a stop plans a stopping phase (Force: the short end, and it cuts a running stop short)",
        _wrap_stop,
    ),
    wraps(
        "timing.instance_reboot",
        _INSTANCES,
        "Instance",
        "reboot",
        "a reboot (a no-op in moto) plans initializing checks and an offline agent",
        _wrap_reboot,
    ),
    wraps(
        "timing.instance_terminate",
        _INSTANCES,
        "Instance",
        "terminate",
        "a terminated instance forgets its transition",
        _wrap_terminate,
    ),
    wraps(
        "timing.start_instances_state_rule",
        _MODELS,
        "EC2Backend",
        "start_instances",
        "with timings, StartInstances refuses an instance that is not stopped (IncorrectInstanceState)",
        _wrap_instances_call({"stopped", "running", "pending"}, "started"),
    ),
    wraps(
        "timing.stop_instances_state_rule",
        _MODELS,
        "EC2Backend",
        "stop_instances",
        "with timings, StopInstances refuses a terminated instance (IncorrectInstanceState)",
        _wrap_instances_call({"running", "pending", "stopping", "stopped"}, "stopped"),
    ),
    wraps(
        "timing.reboot_instances_state_rule",
        _MODELS,
        "EC2Backend",
        "reboot_instances",
        "with timings, RebootInstances refuses an instance that is not running (IncorrectInstanceState)",
        _wrap_instances_call({"running"}, "rebooted"),
    ),
    wraps(
        "timing.instance_type_needs_stopped",
        _MODELS,
        "EC2Backend",
        "modify_instance_attribute",
        "with timings, changing InstanceType needs a stopped instance (IncorrectInstanceState)",
        _wrap_modify_instance_attribute,
    ),
    wraps(
        "timing.stop_instances_force",
        "moto.ec2.responses",
        "EC2Response",
        "stop_instances",
        "pass StopInstances' Force to Instance.stop, which cannot see the request",
        _wrap_stop_instances_action,
    ),
)
