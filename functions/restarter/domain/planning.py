"""Which phases a restart runs, how far along it is, and when it should end.

Durations are the seed's typical phase durations (its phase table) and the vendor guide's
reboot time (3-5 minutes on average, up to 20). They drive `estimated_completion_time` and
the first wait of each poll loop.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from restarter.domain.models import Phase, RestartProgress, RestartRequest, RestartTarget

PHASE_DESCRIPTIONS: dict[Phase, str] = {
    "validating": "Validating restart request",
    "acquiring_lock": "Acquiring cluster lock",
    "stopping_processes": "Gracefully stopping running processes",
    "creating_checkpoint": "Creating state checkpoint",
    "updating_configuration": "Applying hardware/software updates",
    "rebooting": "Rebooting instances",
    "starting_services": "Starting system services and Docker containers",
    "health_checks": "Running health checks and validation",
    "ready": "Cluster is fully operational",
}

# Typical seconds per phase (the seed's table; reboot from the vendor guide).
TYPICAL_SECONDS: dict[Phase, int] = {
    "validating": 0,
    "acquiring_lock": 0,
    "stopping_processes": 120,
    "creating_checkpoint": 150,
    "updating_configuration": 90,
    "rebooting": 180,
    "starting_services": 60,
    "health_checks": 30,
    "ready": 0,
}

# Seconds before the first poll of a phase (about what the phase usually takes, so most phases
# finish at their first poll), then a backoff from a short interval, capped.
FIRST_POLL_SECONDS: dict[Phase, int] = {
    "stopping_processes": 30,
    "creating_checkpoint": 60,
    "updating_configuration": 30,
    "rebooting": 180,
    "starting_services": 30,
    "health_checks": 10,
}
BACKOFF_START_SECONDS = 10
MAX_POLL_SECONDS = 60

INTAKE_STEPS: tuple[Phase, ...] = ("validating", "acquiring_lock")


def plan_phases(request: RestartRequest, target: RestartTarget, *, cluster_running: bool) -> list[Phase]:
    """The ordered phases of one restart; intake steps first, `ready` last."""
    phases: list[Phase] = list(INTAKE_STEPS)
    if not request.force and cluster_running:
        phases.append("stopping_processes")
    if request.preserve_state:
        phases.append("creating_checkpoint")
    if target.changes_configuration():
        phases.append("updating_configuration")
    phases += ["rebooting", "starting_services", "health_checks", "ready"]
    return phases


def expected_seconds(phase: Phase, request: RestartRequest) -> int:
    if phase == "stopping_processes":
        # Bounded by the grace period the caller gave.
        return min(TYPICAL_SECONDS[phase], max(request.grace_period_minutes * 60, 30))
    return TYPICAL_SECONDS[phase]


def estimate_completion(started: datetime, plan: list[Phase], request: RestartRequest) -> datetime:
    return started + timedelta(seconds=sum(expected_seconds(p, request) for p in plan))


def progress_at(plan: list[Phase], phase: Phase) -> RestartProgress:
    """Progress while `phase` runs: every earlier step is complete."""
    index = plan.index(phase)
    completed = len(plan) if phase == "ready" else index
    return RestartProgress(
        phase=phase,
        percentage=round(100 * completed / len(plan)),
        current_step=PHASE_DESCRIPTIONS[phase],
        steps_completed=completed,
        total_steps=len(plan),
    )


def next_phase(plan: list[Phase], phase: Phase) -> Phase:
    return plan[plan.index(phase) + 1]


def poll_delay(phase: Phase, attempt: int) -> int:
    """First wait close to the phase's expected duration, then exponential backoff, capped."""
    if attempt <= 0:
        return FIRST_POLL_SECONDS.get(phase, BACKOFF_START_SECONDS)
    return min(MAX_POLL_SECONDS, BACKOFF_START_SECONDS * (1 << min(attempt - 1, 4)))


def max_polls(timeout_minutes: int) -> int:
    """A bound on any poll loop, even if the clock misbehaves: the deadline is the real limit."""
    return max(20, timeout_minutes * 12)


# Waiting for EC2 capacity (InsufficientInstanceCapacity): 30 s, doubling, at most 5 minutes a
# wait; the last try leaves the restart time to boot and pass its health checks.
CAPACITY_FIRST_WAIT_SECONDS = 30
CAPACITY_MAX_WAIT_SECONDS = 300
CAPACITY_DEADLINE_MARGIN_SECONDS = 300
CAPACITY_SUGGESTION = (
    "The instances are stopped; their EBS volumes are intact (instance-store data is gone). Start them "
    "again when EC2 has capacity for the type, or reserve it (an On-Demand Capacity Reservation or "
    "EC2 Capacity Blocks for ML), or restart with another instance type of the family."
)


def capacity_wait(refusals: int, seconds_left: float) -> int | None:
    """Seconds before trying a start EC2 refused for want of capacity again (30 s, doubling, at
    most 5 minutes); None when the deadline leaves no time for another try and the boot after it."""
    wait = min(CAPACITY_MAX_WAIT_SECONDS, CAPACITY_FIRST_WAIT_SECONDS * 2 ** (refusals - 1))
    return None if seconds_left < wait + CAPACITY_DEADLINE_MARGIN_SECONDS else wait
