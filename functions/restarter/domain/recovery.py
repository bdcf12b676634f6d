"""Recovery from alarms: which cluster an alarm is about, and how (and whether) to recover it.

Pure rules, no I/O. The strategies and their request bodies are the seed's "Recovery from
Errors" use case (`restart`, `restore_snapshot`, `rebuild`); the policy comes from the
cluster's labels:

- `restarter:recovery`: the first strategy to use (`restart` by default);
- `restarter:recovery-cooldown-minutes`: an alarm that fires again this soon after the last
  recovery escalates (30 by default; 0 turns it off);
- `restarter:recovery-budget`: at most this many recoveries per 24 hours (3 by default;
  0 disables alarm recovery for the cluster).

Escalation goes one step up the ladder `restart` → `restore_snapshot` → `rebuild` (a rebuild
stays a rebuild) when the previous recovery failed or the alarm fires again within the
cooldown; `restore_snapshot` without any snapshot becomes `rebuild`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from restarter.domain.models import Cluster, ClusterSnapshot, format_time, parse_time
from restarter.domain.node_recovery import Rung

Strategy = Literal["restart", "restore_snapshot", "rebuild"]
LADDER: tuple[Strategy, ...] = ("restart", "restore_snapshot", "rebuild")

STRATEGY_LABEL = "restarter:recovery"
COOLDOWN_LABEL = "restarter:recovery-cooldown-minutes"
BUDGET_LABEL = "restarter:recovery-budget"

DEFAULT_STRATEGY: Strategy = "restart"
DEFAULT_COOLDOWN = timedelta(minutes=30)
DEFAULT_BUDGET = 3
BUDGET_WINDOW = timedelta(hours=24)
MAX_COOLDOWN_MINUTES = 7 * 24 * 60
MAX_BUDGET = 100

# Restart statuses that count as a failed recovery.
FAILED_RESTART_STATUSES: frozenset[str] = frozenset({"failed", "timed_out", "rolled_back"})

CLUSTER_DIMENSION = "ClusterId"
INSTANCE_DIMENSION = "InstanceId"


# ---------------------------------------------------------------- the alarm


@dataclass(frozen=True)
class AlarmTransition:
    """One alarm state change, whatever shape it arrived in."""

    event_id: str
    alarm_name: str
    alarm_arn: str | None
    state: str
    previous_state: str | None
    reason: str | None = None
    # the dimensions of every metric of the alarm (a metric-math alarm has several)
    dimensions: tuple[Mapping[str, str], ...] = ()

    @property
    def enters_alarm(self) -> bool:
        return self.state == "ALARM" and self.previous_state != "ALARM"


# ---------------------------------------------------------------- alarm -> cluster


@dataclass(frozen=True)
class AlarmMapping:
    """Where an alarm points: one cluster, or nothing (with why)."""

    cluster_id: str | None
    via: Literal["dimension:ClusterId", "dimension:InstanceId", "alarm_tag", "none"]
    candidates: tuple[str, ...] = ()

    @property
    def ambiguous(self) -> bool:
        return self.cluster_id is None and len(self.candidates) > 1


def dimension_values(dimensions: Iterable[Mapping[str, str]], name: str) -> list[str]:
    """Distinct values of one dimension over all metrics, in order of appearance."""
    values: list[str] = []
    for metric in dimensions:
        value = metric.get(name)
        if value and value not in values:
            values.append(value)
    return values


def clusters_owning(instance_ids: Iterable[str], clusters: Iterable[Cluster]) -> list[str]:
    """The clusters whose instances include any of `instance_ids` (a pure lookup over the records)."""
    wanted = set(instance_ids)
    return [c.id for c in clusters if wanted.intersection(c.instance_ids)]


def _single(candidates: list[str], via: Any) -> AlarmMapping:
    distinct = tuple(dict.fromkeys(candidates))
    if len(distinct) == 1:
        return AlarmMapping(distinct[0], via, distinct)
    return AlarmMapping(None, "none" if not distinct else via, distinct)


def map_by_dimensions(
    dimensions: Sequence[Mapping[str, str]], clusters: Iterable[Cluster] | None = None
) -> AlarmMapping:
    """`ClusterId` names the cluster; else `InstanceId` through the clusters' instances.

    `clusters` is only needed when there is no `ClusterId` dimension. Several clusters is
    ambiguous: nothing is restarted on a guess.
    """
    by_id = dimension_values(dimensions, CLUSTER_DIMENSION)
    if by_id:
        return _single(by_id, "dimension:ClusterId")
    instance_ids = dimension_values(dimensions, INSTANCE_DIMENSION)
    if instance_ids and clusters is not None:
        return _single(clusters_owning(instance_ids, clusters), "dimension:InstanceId")
    return AlarmMapping(None, "none")


def map_by_tags(tags: Mapping[str, str], tag_key: str) -> AlarmMapping:
    value = tags.get(tag_key, "").strip()
    return AlarmMapping(value, "alarm_tag", (value,)) if value else AlarmMapping(None, "none")


# ---------------------------------------------------------------- policy


@dataclass(frozen=True)
class RecoveryPolicy:
    strategy: Strategy = DEFAULT_STRATEGY
    cooldown: timedelta = DEFAULT_COOLDOWN
    budget: int = DEFAULT_BUDGET
    # labels that were present but not understood (the defaults were used instead)
    problems: tuple[str, ...] = ()


def _int_label(labels: Mapping[str, str], name: str, low: int, high: int, problems: list[str]) -> int | None:
    raw = labels.get(name)
    if raw is None:
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        problems.append(f"{name}={raw!r} is not an integer in [{low}, {high}]")
        return None
    return value


def policy_from_labels(labels: Mapping[str, str]) -> RecoveryPolicy:
    """The cluster's recovery policy; a label that is not understood falls back to its default."""
    problems: list[str] = []
    strategy: Strategy = DEFAULT_STRATEGY
    raw_strategy = labels.get(STRATEGY_LABEL)
    if raw_strategy is not None:
        name = raw_strategy.strip().lower()
        if name in LADDER:
            strategy = LADDER[LADDER.index(name)]  # type: ignore[arg-type]
        else:
            problems.append(f"{STRATEGY_LABEL}={raw_strategy!r} is not one of {', '.join(LADDER)}")
    minutes = _int_label(labels, COOLDOWN_LABEL, 0, MAX_COOLDOWN_MINUTES, problems)
    budget = _int_label(labels, BUDGET_LABEL, 0, MAX_BUDGET, problems)
    return RecoveryPolicy(
        strategy=strategy,
        cooldown=DEFAULT_COOLDOWN if minutes is None else timedelta(minutes=minutes),
        budget=DEFAULT_BUDGET if budget is None else budget,
        problems=tuple(problems),
    )


# ---------------------------------------------------------------- history and decision


class RecoveryEntry(BaseModel):
    """One recovery that was started for a cluster."""

    model_config = ConfigDict(defer_build=True)

    cluster_id: str
    recovered_at: str
    alarm_name: str
    strategy: Strategy
    restart_id: str
    event_id: str
    escalated_from: Strategy | None = None
    reasons: list[str] = []
    # the node ladder's rung, when the GPUs' health drove the recovery (domain.node_recovery)
    rung: Rung | None = None


def escalate(strategy: Strategy) -> Strategy:
    """One step up the ladder; `rebuild` is the top."""
    return LADDER[min(LADDER.index(strategy) + 1, len(LADDER) - 1)]


def stronger(a: Strategy, b: Strategy) -> Strategy:
    return a if LADDER.index(a) >= LADDER.index(b) else b


def recoveries_in_window(history: Iterable[RecoveryEntry], now: datetime, window: timedelta = BUDGET_WINDOW) -> int:
    since = now - window
    return sum(1 for entry in history if since < parse_time(entry.recovered_at) <= now)


def budget_exhausted(history: Iterable[RecoveryEntry], now: datetime, budget: int) -> bool:
    return recoveries_in_window(history, now) >= budget


def budget_resets_at(history: Iterable[RecoveryEntry], now: datetime, budget: int) -> datetime | None:
    """When the next recovery becomes possible again (None: it is possible now, or never)."""
    if budget <= 0:
        return None
    times = sorted(
        parse_time(e.recovered_at) for e in history if now - BUDGET_WINDOW < parse_time(e.recovered_at) <= now
    )
    if len(times) < budget:
        return None
    return times[len(times) - budget] + BUDGET_WINDOW


def within_cooldown(last: RecoveryEntry | None, now: datetime, cooldown: timedelta) -> bool:
    if last is None or cooldown <= timedelta(0):
        return False
    return now - parse_time(last.recovered_at) < cooldown


def recovery_failed(restart_status: str | None) -> bool:
    return restart_status in FAILED_RESTART_STATUSES


def latest(history: Iterable[RecoveryEntry]) -> RecoveryEntry | None:
    return max(history, key=lambda e: e.recovered_at, default=None)


@dataclass(frozen=True)
class RecoveryDecision:
    action: Literal["recover", "budget_exhausted"]
    strategy: Strategy | None
    escalated_from: Strategy | None = None
    reasons: tuple[str, ...] = ()
    recoveries_in_window: int = 0
    budget: int = DEFAULT_BUDGET
    budget_resets_at: str | None = None
    snapshot_id: str | None = None


def choose_strategy(
    policy: RecoveryPolicy,
    previous: RecoveryEntry | None,
    *,
    previous_failed: bool,
    in_cooldown: bool,
    has_snapshots: bool,
) -> tuple[Strategy, Strategy | None, list[str]]:
    """(strategy, escalated_from, reasons). Escalation starts from the stronger of the policy's
    strategy and the previous recovery's, so repeated failures climb the whole ladder."""
    reasons: list[str] = []
    strategy = policy.strategy
    escalated_from: Strategy | None = None
    if previous is not None and (previous_failed or in_cooldown):
        if previous_failed:
            reasons.append(f"previous recovery {previous.restart_id} ({previous.strategy}) failed")
        if in_cooldown:
            reasons.append(f"alarm fired again within the cooldown after {previous.recovered_at}")
        base = stronger(policy.strategy, previous.strategy)
        escalated_from, strategy = base, escalate(base)
    if strategy == "restore_snapshot" and not has_snapshots:
        reasons.append("no snapshot to restore")
        escalated_from = escalated_from or "restore_snapshot"
        strategy = "rebuild"
    if escalated_from == strategy:  # a rebuild stays a rebuild
        escalated_from = None
    return strategy, escalated_from, reasons


def decide_recovery(
    policy: RecoveryPolicy,
    history: Sequence[RecoveryEntry],
    now: datetime,
    *,
    previous_restart_status: str | None,
    snapshots: Sequence[ClusterSnapshot] = (),
) -> RecoveryDecision:
    """Whether to recover now, and how. `history` is the cluster's recent recoveries (any order),
    `previous_restart_status` the status of the restart of the latest one."""
    count = recoveries_in_window(history, now)
    if count >= policy.budget:
        resets = budget_resets_at(history, now, policy.budget)
        return RecoveryDecision(
            action="budget_exhausted",
            strategy=None,
            reasons=(f"{count} recoveries in the last 24 hours (budget {policy.budget})",),
            recoveries_in_window=count,
            budget=policy.budget,
            budget_resets_at=format_time(resets) if resets else None,
        )
    previous = latest(history)
    strategy, escalated_from, reasons = choose_strategy(
        policy,
        previous,
        previous_failed=previous is not None and recovery_failed(previous_restart_status),
        in_cooldown=within_cooldown(previous, now, policy.cooldown),
        has_snapshots=bool(snapshots),
    )
    snapshot = latest_snapshot(snapshots) if strategy == "restore_snapshot" else None
    return RecoveryDecision(
        action="recover",
        strategy=strategy,
        escalated_from=escalated_from,
        reasons=tuple(reasons),
        recoveries_in_window=count,
        budget=policy.budget,
        snapshot_id=snapshot.id if snapshot else None,
    )


# ---------------------------------------------------------------- the restart requests


def latest_snapshot(snapshots: Iterable[ClusterSnapshot]) -> ClusterSnapshot | None:
    """The seed's `max(snapshots, key=lambda s: s["created_at"])`."""
    return max(snapshots, key=lambda s: parse_time(s.created_at), default=None)


def recovery_request(strategy: Strategy, cluster: Cluster, now: datetime, alarm_name: str) -> dict[str, Any]:
    """The seed's request body for each strategy, with the alarm named in the reason."""
    cause = f" (alarm {alarm_name[:200]})"
    if strategy == "restart":
        return {
            "force": True,
            "wait_for_ready": True,
            "apply_system_updates": True,
            "restart_reason": f"Error recovery - forced restart{cause}",
        }
    if strategy == "restore_snapshot":
        snapshot = latest_snapshot(cluster.snapshots)
        if snapshot is None:
            raise ValueError("restore_snapshot needs a snapshot; decide_recovery escalates to rebuild")
        return {
            "force": True,
            "wait_for_ready": True,
            "restore_from_snapshot": snapshot.id,
            "restart_reason": f"Error recovery - restore from snapshot {snapshot.id}{cause}",
        }
    body: dict[str, Any] = {
        "force": True,
        "wait_for_ready": True,
        "environment_updates": {"RECOVERY_MODE": "true", "RECOVERY_TIMESTAMP": format_time(now)},
        "restart_reason": f"Error recovery - rebuild from template{cause}",
    }
    image = cluster.template_image or cluster.container.image
    if image:
        body["update_docker_image"] = image
    return body


@dataclass
class RecoveryOutcome:
    """What the service did with one alarm event (the handler's answer)."""

    action: Literal[
        "ignored",
        "unmapped",
        "duplicate",
        "budget_exhausted",
        "refused",
        "recovery_started",
        "paused",
        "replacement_needed",
    ]
    alarm_name: str
    event_id: str
    cluster_id: str | None = None
    strategy: Strategy | None = None
    escalated_from: Strategy | None = None
    restart_id: str | None = None
    reasons: list[str] = field(default_factory=list)
    error_code: str | None = None
    rung: Rung | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None and v != []}
