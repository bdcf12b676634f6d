"""Rollouts: one restart request applied to many clusters, with a concurrency limit, a failure
threshold and a maintenance window (the seed's "System Updates and Maintenance" use case).

Pure rules only. The state machine (`statemachine/rollout.asl.json`) runs the items; the
rollout record holds every item's result, and these functions decide from it whether a new
item may start and what the report says.
"""

from __future__ import annotations

import fnmatch
import hashlib
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from restarter.domain.errors import NotFoundError
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


class MaintenanceWindow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=128)
    end: datetime | None = None

    @field_validator("end")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("end must carry a time zone (UTC with Z)")
        return value


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

    cluster_ids: list[str] | None = Field(default=None, min_length=1, max_length=1000)
    labels: dict[str, str] | None = Field(default=None, min_length=1)
    name_pattern: str | None = Field(default=None, min_length=1, max_length=256)
    request: dict[str, Any] = Field(default_factory=dict)
    docker_updates: dict[str, str] = Field(default_factory=dict)
    production_label: str = Field(default="env=production", pattern=r"^[^=]+=.*$")
    max_concurrency: int = Field(default=5, ge=1, le=50)
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


class RolloutRecord(BaseModel):
    rollout_id: str = Field(pattern=ROLLOUT_ID_PATTERN)
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
    # in target order
    results: list[ItemResult]

    def result(self, cluster_id: str) -> ItemResult:
        for item in self.results:
            if item.cluster_id == cluster_id:
                return item
        raise KeyError(cluster_id)


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
        body["grace_period_minutes"] = max(PRODUCTION_GRACE_PERIOD_MINUTES, body.get("grace_period_minutes", 0))
        body["preserve_state"] = True
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


def window_closed(spec: RolloutSpec, now: datetime) -> bool:
    end = spec.maintenance_window.end
    return end is not None and now >= end


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
        "maintenance_window": rollout.spec.maintenance_window.id,
        "total_clusters": len(results),
        "successful_updates": sum(1 for r in results if r.success),
        "failed": sum(1 for r in results if r.status == "failed"),
        "skipped": sum(1 for r in results if r.status in ("skipped", "skipped_window_closed")),
        "results": [r.model_dump(mode="json") for r in results],
    }
