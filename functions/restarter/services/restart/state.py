"""The typed scratch state a phase keeps between its steps, stored in the record's `phase_state`.

Each phase reads its state model from `record.phase_state[phase]` and writes it back after
every step, failed or not: a retried step resumes from what the last one recorded (never
repeating an action on an instance), and cleanup knows what to undo. The stored form is a
plain JSON object with the same keys as before the models existed; keys a model does not
know are kept as they were, and values left at their default are not written.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from restarter.domain.models import RestartRecord
from restarter.domain.outcome import StepFailure


class StoredState(BaseModel):
    """A piece of `phase_state`: lenient on read, unknown keys kept."""

    model_config = ConfigDict(extra="allow")


class PhaseState(StoredState):
    """What every phase may record."""

    # what the last failed step hit; its details become the restart error's details
    failure: StepFailure | None = None
    # why the phase had nothing to do (shown as the phase's outcome detail)
    skipped: str | None = None
    # seconds the state machine waits before the next phase starts
    settle_seconds: int | None = None
    # seconds before the next poll of this phase, when the phase knows better than the backoff
    poll_seconds: int | None = None
    # StartInstances refused for want of EC2 capacity, so far in this phase
    capacity_refusals: int = 0


class CommandState(PhaseState):
    """A phase that sends one command to the instances and polls it."""

    command_id: str | None = None
    instances: list[str] = Field(default_factory=list)


StateT = TypeVar("StateT", bound=StoredState)


def load_state(record: RestartRecord, key: str, model: type[StateT]) -> StateT:
    return model.model_validate(record.phase_state.get(key) or {})


def store_state(record: RestartRecord, key: str, state: StoredState) -> None:
    record.phase_state[key] = state.model_dump(mode="json", exclude_defaults=True)


def recorded_failure_details(record: RestartRecord, key: str) -> dict[str, Any]:
    """The details of the failure a phase recorded (any phase, even one without a model)."""
    failure = (record.phase_state.get(key) or {}).get("failure") or {}
    return dict(failure.get("details") or {})
