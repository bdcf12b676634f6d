"""The phases of a restart, in the seed's order, each with the state it keeps between steps."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic

from restarter.domain.models import Phase
from restarter.services.restart.context import PhaseContext
from restarter.services.restart.phases.checkpoint import CheckpointState, creating_checkpoint
from restarter.services.restart.phases.configure import ConfigureState, updating_configuration
from restarter.services.restart.phases.health import HealthState, health_checks
from restarter.services.restart.phases.ready import ReadyState, ready
from restarter.services.restart.phases.reboot import RebootState, rebooting
from restarter.services.restart.phases.start_services import StartServicesState, starting_services
from restarter.services.restart.phases.stop import StopState, stopping_processes
from restarter.services.restart.state import StateT


@dataclass(frozen=True)
class PhaseStep(Generic[StateT]):
    """One phase: its state model and the step that returns True once the phase is done."""

    state_model: type[StateT]
    run: Callable[[PhaseContext[StateT]], bool]


PHASES: Mapping[Phase, PhaseStep[Any]] = {
    "stopping_processes": PhaseStep(StopState, stopping_processes),
    "creating_checkpoint": PhaseStep(CheckpointState, creating_checkpoint),
    "updating_configuration": PhaseStep(ConfigureState, updating_configuration),
    "rebooting": PhaseStep(RebootState, rebooting),
    "starting_services": PhaseStep(StartServicesState, starting_services),
    "health_checks": PhaseStep(HealthState, health_checks),
    "ready": PhaseStep(ReadyState, ready),
}
