"""Rollouts: one restart request applied to many clusters, with a concurrency limit, a failure
threshold and a maintenance window (the seed's "System Updates and Maintenance" use case).

Pure rules only. The state machine (`statemachine/rollout.asl.json`) runs the items; the
rollout record holds every item's result, and these functions decide from it whether a new
item may start and what the report says.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from restarter.domain.errors import NotFoundError, RequestValidationError
from restarter.domain.models import Cluster, RestartRequest
from restarter.domain.validation import parse_restart_request

ROLLOUT_ID_PATTERN = r"^rol_[A-Za-z0-9_-]{1,64}$"

ItemStatus = Literal["pending", "running", "succeeded", "failed", "skipped", "skipped_window_closed"]
FINISHED_ITEM_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "skipped", "skipped_window_closed"})
RolloutStatus = Literal["running", "completed"]
RolloutTrigger = Literal["api", "schedule", "queue", "cli"]

# The seed's maintenance settings: production clusters get the gentler treatment.
PRODUCTION_GRACE_PERIOD_MINUTES = 15
DEFAULT_GRACE_PERIOD_MINUTES = 5
DEFAULT_TIMEOUT_MINUTES = 15  # the seed's defaults and bound for timeout_minutes
MAX_TIMEOUT_MINUTES = 60


# An INLINE Map runs at most 40 iterations at once (Step Functions quota): a higher
# max_concurrency would be accepted and silently not honoured.
MAX_CONCURRENCY = 40

# An INLINE Map's iterations are events of the rollout execution, whose history holds at most
# 25,000 events. Measured on the embedded AWS (tests/integration/test_rollouts.py): an item that polls its
# restart once costs 23 events (start 5, choice 2, wait 2, poll 5, choice 2, finish 5, map
# iteration 2), each further poll 9 (wait 2, poll 5, choice 2), the rollout itself about 15.
# The budget allows every item 4 further polls (a restart overrunning its estimate by ~7 minutes
# with the poll backoff below) and keeps 10 % of the history free for retries.
HISTORY_EVENT_LIMIT = 25_000
ROLLOUT_FIXED_EVENTS = 15
ITEM_EVENTS_ONE_POLL = 23
EVENTS_PER_EXTRA_POLL = 9
ITEM_EVENT_BUDGET = ITEM_EVENTS_ONE_POLL + 4 * EVENTS_PER_EXTRA_POLL
MAX_ROLLOUT_TARGETS = int((HISTORY_EVENT_LIMIT * 0.9 - ROLLOUT_FIXED_EVENTS) // ITEM_EVENT_BUDGET) // 10 * 10

# An item's polling: the first poll when its restart is expected to be done (bounded), then a
# backoff from 30 s doubling up to 15 minutes, never past the restart's deadline.
MIN_FIRST_WAIT_SECONDS = 30
MAX_FIRST_WAIT_SECONDS = 900
POLL_BASE_SECONDS = 30
MAX_POLL_SECONDS = 900

# A window may open later than now (a resume for tonight's window), but not so late that the
# rollout execution (TimeoutSeconds 172800 in rollout.asl.json) would time out waiting for it.
MAX_WINDOW_START_DELAY = timedelta(hours=24)


class MaintenanceWindow(BaseModel):
    """When restarts may start: not before `start` (if given), not after `end`. Instead of `end`,
    `duration_minutes` ends the window that long after its start (or after the rollout starts)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=128)
    start: datetime | None = Field(default=None, description="No restart starts before this (UTC with Z)")
    end: datetime | None = Field(default=None, description="No restart starts after this (UTC with Z)")
    duration_minutes: int | None = Field(
        default=None, ge=1, le=1440, description="Instead of `end`: the window ends this long after it opens"
    )

    @field_validator("start", "end")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give a time zone (UTC with Z)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> MaintenanceWindow:
        if self.end is not None and self.duration_minutes is not None:
            raise ValueError("give either end or duration_minutes, not both")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class FailureThreshold(BaseModel):
    """Once this many items (or this share of all items) have failed, no new item starts;
    items already running finish. Neither set: every item is tried."""

    model_config = ConfigDict(extra="forbid")

    count: int | None = Field(default=None, ge=1)
    percentage: float | None = Field(default=None, gt=0, le=100)

    @model_validator(mode="after")
    def _one_of(self) -> FailureThreshold:
        if self.count is not None and self.percentage is not None:
            raise ValueError("give either count or percentage, not both")
        return self


class RolloutTargets(BaseModel):
    """What a rollout does and to which clusters, without its window: what a schedule stores
    (each firing gets its own window)."""

    model_config = ConfigDict(extra="forbid")

    cluster_ids: list[str] | None = Field(default=None, min_length=1, max_length=MAX_ROLLOUT_TARGETS)
    labels: dict[str, str] | None = Field(default=None, min_length=1)
    name_pattern: str | None = Field(default=None, min_length=1, max_length=256)
    request: dict[str, Any] = Field(default_factory=dict)
    docker_updates: dict[str, str] = Field(default_factory=dict)
    production_label: str = Field(default="env=production", pattern=r"^[^=]+=.*$")
    max_concurrency: int = Field(
        default=5, ge=1, le=MAX_CONCURRENCY, description="Restarts at a time (an inline Map runs 40 at most)"
    )
    failure_threshold: FailureThreshold = Field(default_factory=FailureThreshold)

    @model_validator(mode="after")
    def _valid(self) -> RolloutTargets:
        given = [name for name in ("cluster_ids", "labels", "name_pattern") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of cluster_ids, labels, name_pattern")
        # the shared body must be a valid restart request on its own (raises RequestValidationError)
        parse_restart_request(self.request)
        for cluster_id, image in self.docker_updates.items():
            parse_restart_request({**self.request, "update_docker_image": image})
            if not cluster_id:
                raise ValueError("docker_updates keys are cluster ids")
        return self


class RolloutSpec(RolloutTargets):
    maintenance_window: MaintenanceWindow


class ItemResult(BaseModel):
    """One cluster's line in the report; the first six fields are the seed's."""

    cluster_id: str
    name: str
    success: bool = False
    downtime_seconds: int | None = None
    updates_applied: list[str] = Field(default_factory=list)
    error: str | None = None
    status: ItemStatus = "pending"
    restart_id: str | None = None
    started_at: str | None = None
    finished_at: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_ITEM_STATUSES


class ResumeMark(BaseModel):
    """The last resume asked with an Idempotency-Key: a retry of it answers, not resumes again."""

    key: str
    fingerprint: str
    attempt: int


class RolloutRecord(BaseModel):
    rollout_id: str = Field(pattern=ROLLOUT_ID_PATTERN)
    # as asked for (an Idempotency-Key replay compares it); the window in force is `window`
    spec: RolloutSpec
    status: RolloutStatus = "running"
    requested_by: str
    # None: an operator's rollout (queue, CLI) over every tenant's clusters
    tenant_id: str | None = None
    trigger: RolloutTrigger = "api"
    created_at: str
    completed_at: str | None = None
    attempt: int = 1
    execution_arn: str | None = None
    # the window of the current attempt, resolved (an absolute end); None: the spec's
    window: MaintenanceWindow | None = None
    last_resume: ResumeMark | None = None
    # in target order
    results: list[ItemResult]

    def result(self, cluster_id: str) -> ItemResult:
        for item in self.results:
            if item.cluster_id == cluster_id:
                return item
        raise KeyError(cluster_id)

    @property
    def current_window(self) -> MaintenanceWindow:
        return self.window or self.spec.maintenance_window

    @property
    def execution_name(self) -> str:
        """The current attempt's execution: one name per attempt, so starting it twice is safe."""
        return f"{self.rollout_id}-{self.attempt}"

    @property
    def start_recorded(self) -> bool:
        """Whether the current attempt's execution is known to have started."""
        return bool(self.execution_arn) and str(self.execution_arn).rsplit(":", 1)[-1] == self.execution_name


# ---------------------------------------------------------------- rules


def rollout_id_for_key(key: str) -> str:
    """A rollout id derived from a delivery's key (an Idempotency-Key, a queue message's
    business key): the same key always names the same rollout."""
    return "rol_k" + hashlib.sha256(key.encode()).hexdigest()[:24]


def _label_pair(label: str) -> tuple[str, str]:
    key, _, value = label.partition("=")
    return key, value


def select_targets(spec: RolloutTargets, clusters: list[Cluster]) -> list[Cluster]:
    """The clusters the rollout covers: by ids (in the given order, all must exist), by labels
    (every pair must match) or by a glob on the name (sorted by id)."""
    if spec.cluster_ids is not None:
        by_id = {c.id: c for c in clusters}
        missing = [cid for cid in spec.cluster_ids if cid not in by_id]
        if missing:
            raise NotFoundError("Cluster not found", {"cluster_ids": missing})
        return [by_id[cid] for cid in dict.fromkeys(spec.cluster_ids)]
    if spec.labels is not None:
        wanted = spec.labels
        chosen = [c for c in clusters if all(c.labels.get(k) == v for k, v in wanted.items())]
    else:
        pattern = spec.name_pattern or "*"
        chosen = [c for c in clusters if fnmatch.fnmatchcase(c.name, pattern)]
    return sorted(chosen, key=lambda c: c.id)


def is_production(spec: RolloutSpec, cluster: Cluster) -> bool:
    key, value = _label_pair(spec.production_label)
    return cluster.labels.get(key) == value


def request_for(spec: RolloutSpec, cluster: Cluster) -> RestartRequest:
    """The seed's per-cluster body: the shared request, the production policy (grace 15 and
    preserve_state, driven by the production label), the cluster's image override, and the
    window as reason unless the request gives one."""
    body = dict(spec.request)
    body.setdefault("restart_reason", f"Maintenance window: {spec.maintenance_window.id}")
    if is_production(spec, cluster):
        grace = max(PRODUCTION_GRACE_PERIOD_MINUTES, body.get("grace_period_minutes", 0))
        body["grace_period_minutes"] = grace
        body["preserve_state"] = True
        if body.get("timeout_minutes", DEFAULT_TIMEOUT_MINUTES) <= grace:  # the gentler stop still has to fit
            body["timeout_minutes"] = min(MAX_TIMEOUT_MINUTES, grace + DEFAULT_TIMEOUT_MINUTES)
    else:
        body.setdefault("grace_period_minutes", DEFAULT_GRACE_PERIOD_MINUTES)
    image = spec.docker_updates.get(cluster.id)
    if image:
        body["update_docker_image"] = image
    return parse_restart_request(body)


def may_start(results_so_far: list[ItemResult], spec: RolloutSpec) -> bool:
    """Whether a new item may start: the failures so far are under the threshold.
    `results_so_far` is every item of the rollout (pending ones included)."""
    failed = sum(1 for r in results_so_far if r.status == "failed")
    threshold = spec.failure_threshold
    if threshold.count is not None:
        return failed < threshold.count
    if threshold.percentage is not None and results_so_far:
        return failed * 100.0 / len(results_so_far) < threshold.percentage
    return True


def window_closed(window: RolloutSpec | MaintenanceWindow, now: datetime) -> bool:
    if isinstance(window, RolloutSpec):
        window = window.maintenance_window
    return window.end is not None and now >= window.end


def resolve_window(window: MaintenanceWindow, now: datetime) -> MaintenanceWindow:
    """The window with an absolute end: `duration_minutes` counts from its start, else from now."""
    if window.duration_minutes is None:
        return window
    opens = window.start or now
    return MaintenanceWindow(id=window.id, start=window.start, end=opens + timedelta(minutes=window.duration_minutes))


def _invalid_window(field: str, message: str) -> RequestValidationError:
    return RequestValidationError(
        f"Invalid request: {field}",
        {"errors": [{"field": field, "message": message, "type": "value_error"}]},
    )


def check_window_start(window: MaintenanceWindow, now: datetime, field: str = "maintenance_window") -> None:
    if window.start is not None and window.start - now > MAX_WINDOW_START_DELAY:
        hours = int(MAX_WINDOW_START_DELAY.total_seconds() // 3600)
        raise _invalid_window(f"{field}.start", f"the window must open within {hours} hours")


def check_resume_window(window: MaintenanceWindow, now: datetime) -> None:
    """A window given to resume a rollout must still be open at some point: one that has ended
    would skip every cluster."""
    check_window_start(window, now)
    if window.end is not None and window.end <= now:
        raise _invalid_window("maintenance_window.end", "the window has already ended; give a later one")


def window_start_delay(window: MaintenanceWindow, now: datetime) -> int:
    """Seconds until the window opens (0 when open), rounded up: never a second early."""
    if window.start is None:
        return 0
    return max(0, math.ceil((window.start - now).total_seconds()))


def window_fingerprint(window: MaintenanceWindow | None) -> str:
    body = window.model_dump(mode="json", exclude_none=True) if window is not None else None
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]


def check_rollout_size(count: int, field: str = "cluster_ids") -> None:
    """An inline Map's iterations share the rollout execution's history (25,000 events)."""
    if count > MAX_ROLLOUT_TARGETS:
        raise RequestValidationError(
            f"A rollout covers at most {MAX_ROLLOUT_TARGETS} clusters; this one matches {count}",
            {
                "errors": [
                    {
                        "field": field,
                        "message": f"at most {MAX_ROLLOUT_TARGETS} clusters per rollout",
                        "type": "too_long",
                    }
                ],
                "max_clusters": MAX_ROLLOUT_TARGETS,
                "matched_clusters": count,
                "suggestion": "Split the rollout: several rollouts by cluster_ids, or a label per batch",
            },
        )


def reset_for_resume(results: list[ItemResult]) -> list[ItemResult]:
    """Succeeded items keep their result; the others go back to pending and keep their earlier
    error until they are tried again."""
    return [
        item if item.status == "succeeded" else ItemResult(cluster_id=item.cluster_id, name=item.name, error=item.error)
        for item in results
    ]


def first_wait_seconds(estimated_completion: datetime, now: datetime) -> int:
    """The first poll of an item's restart: when the restart is expected to be done."""
    expected = (estimated_completion - now).total_seconds()
    return int(min(MAX_FIRST_WAIT_SECONDS, max(MIN_FIRST_WAIT_SECONDS, expected)))


def next_poll_seconds(polls: int, now: datetime, deadline: datetime, give_up_at: datetime) -> int:
    """The wait before poll number `polls + 1`: 30 s doubling up to 15 minutes, but never past the
    restart's deadline (it ends by then) and, past it, never past when the item gives up."""
    backoff: int = min(MAX_POLL_SECONDS, POLL_BASE_SECONDS << min(polls, 10))
    until = deadline if now < deadline else give_up_at
    left = int((until - now).total_seconds()) + 1
    return max(POLL_BASE_SECONDS, min(backoff, left))


def summarize(rollout: RolloutRecord) -> dict[str, Any]:
    """The seed's result shape, plus the rollout's own counts."""
    results = rollout.results
    return {
        "rollout_id": rollout.rollout_id,
        "status": rollout.status,
        "trigger": rollout.trigger,
        "created_at": rollout.created_at,
        "completed_at": rollout.completed_at,
        "attempt": rollout.attempt,
        "maintenance_window": rollout.current_window.id,
        "total_clusters": len(results),
        "successful_updates": sum(1 for r in results if r.success),
        "failed": sum(1 for r in results if r.status == "failed"),
        "skipped": sum(1 for r in results if r.status in ("skipped", "skipped_window_closed")),
        "results": [r.model_dump(mode="json") for r in results],
    }
