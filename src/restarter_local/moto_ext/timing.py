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

How (the moto patches are in ``ec2_timing_ext.py``): moto's state stays its own (the final
state, applied at once as moto does); the state keeps one ``Transition`` per instance id, a list
of phases with monotonic end times, and the read paths (``Instance._state``, hence ``state``,
``state_code``, ``is_running``, filters and the serialized ``State``; ``instance_status`` /
``system_status``; the agent's online flag) show the current phase's view until it ends. A
transition that is over (or forgotten by ``reset()``) leaves moto's state showing.

``SimulatedAgentState.never_comes_back(instance_id)`` (timings or not): every later start stays
``pending`` forever, every later reboot ends with status checks ``impaired`` and the agent
offline, until ``clear_never_comes_back``.

With timings set, the state rules of AWS apply too (``IncorrectInstanceState``): start only a
stopped (or already running/pending) instance, stop not a terminated one, reboot only a running
one, change ``InstanceType`` only on a stopped one.
"""

from __future__ import annotations

import math
import random
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from moto.core.utils import utcnow

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
