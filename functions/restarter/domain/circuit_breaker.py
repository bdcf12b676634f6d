"""The fleet circuit breaker of alarm recovery: a bad driver rollout must not reboot the fleet.

Alarms of many clusters at once usually have one cause (a driver, an image, an agent pushed to
all of them), and recovering every cluster then multiplies the outage instead of ending it. So,
like NVIDIA NVSentinel's breaker, automatic recoveries of a tenant pause when more than a share
of its clusters (20% by default, never fewer than 2) would be in recovery within a window (10
minutes by default). The breaker closes by itself once the share falls, or when an operator
closes it; an operator close holds it closed for one window, or the burst that opened it would
open it again at the next alarm.

Pure rules, no I/O: the caller reads the tenant's state and recent recoveries, asks
`evaluate_breaker`, stores the state it returns (optimistically, on its `version`) and, when a
request is paused, records it with `pause` so that it can be re-driven when the breaker closes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict

from restarter.domain.models import format_time, parse_time
from restarter.domain.recovery import RecoveryEntry

DEFAULT_SHARE = 0.2
DEFAULT_MIN_CLUSTERS = 2
DEFAULT_WINDOW = timedelta(minutes=10)
# Paused requests kept in the state (the newest): the item stays far below DynamoDB's 400 KB.
MAX_PAUSED = 100
# `share * total` is a float product: 0.29 * 100 is 28.999999999999996, which is 29 clusters.
_EPSILON = 1e-9


@dataclass(frozen=True)
class BreakerPolicy:
    share: float = DEFAULT_SHARE
    min_clusters: int = DEFAULT_MIN_CLUSTERS
    window: timedelta = DEFAULT_WINDOW


class PausedRecovery(BaseModel):
    """An automatic recovery the open breaker held back (what is needed to re-drive it)."""

    model_config = ConfigDict(defer_build=True)

    cluster_id: str
    event_id: str
    alarm_name: str
    alarm_arn: str | None = None
    paused_at: str
    reasons: list[str] = []


class BreakerState(BaseModel):
    """One tenant's breaker, as stored. `recovering_clusters`, `total_clusters` and `limit` are
    those of the last decision, so that an operator sees why the breaker is where it is."""

    model_config = ConfigDict(defer_build=True)

    tenant_id: str
    state: Literal["closed", "open"] = "closed"
    opened_at: str | None = None
    opened_reason: str | None = None
    closed_at: str | None = None
    closed_by: str | None = None
    # an operator close holds the breaker closed for one window (the same burst must not reopen it)
    hold_closed_until: str | None = None
    recovering_clusters: list[str] = []
    total_clusters: int = 0
    limit: int = 0
    paused: list[PausedRecovery] = []
    version: int = 0


@dataclass(frozen=True)
class BreakerDecision:
    allow: bool
    opens: bool
    closes: bool
    state: BreakerState  # the new state to store
    reason: str


def recovery_limit(policy: BreakerPolicy, total_clusters: int) -> int:
    """How many of the tenant's clusters may be in recovery at once; one more opens the breaker."""
    return max(policy.min_clusters, math.floor(policy.share * total_clusters + _EPSILON))


def clusters_recovering(entries: Iterable[RecoveryEntry], now: datetime, window: timedelta) -> set[str]:
    """The clusters with a recovery started within (now - window, now]."""
    since = now - window
    return {e.cluster_id for e in entries if since < parse_time(e.recovered_at) <= now}


def _describe(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    if seconds % 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = seconds // 60
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def _held_closed(state: BreakerState, now: datetime) -> bool:
    return state.hold_closed_until is not None and now < parse_time(state.hold_closed_until)


def evaluate_breaker(
    state: BreakerState | None,
    policy: BreakerPolicy,
    *,
    tenant_id: str,
    total_clusters: int,
    recovering: set[str],
    cluster_id: str,
    now: datetime,
) -> BreakerDecision:
    """Whether an automatic recovery of `cluster_id` may start now. `recovering` is the tenant's
    clusters in recovery within the window (`clusters_recovering`), `state` the stored state
    (None: never evaluated). The state returned keeps `state`'s version: the store bumps it."""
    limit = recovery_limit(policy, total_clusters)
    current = state or BreakerState(tenant_id=tenant_id)
    after = recovering | {cluster_id}
    others = recovering - {cluster_id}
    window = _describe(policy.window)
    counts = f"of {total_clusters} clusters of tenant {tenant_id}"
    closes = False
    if current.state == "open":
        if len(others) >= limit:
            paused = current.model_copy(
                update={"recovering_clusters": sorted(recovering), "total_clusters": total_clusters, "limit": limit}
            )
            reason = (
                f"recovery circuit open since {current.opened_at}: {len(others)} {counts} "
                f"in recovery within {window} (limit {limit})"
            )
            return BreakerDecision(allow=False, opens=False, closes=False, state=paused, reason=reason)
        closes = True
        current = current.model_copy(
            update={
                "state": "closed",
                "closed_at": format_time(now),
                "closed_by": f"automatic: share fell to {len(others)} {counts} (limit {limit})",
            }
        )
    if len(after) > limit and not _held_closed(current, now):
        reason = f"{len(after)} {counts} would be in recovery within {window} (limit {limit})"
        opened = current.model_copy(
            update={
                "state": "open",
                "opened_at": format_time(now),
                "opened_reason": reason,
                "closed_at": None,
                "closed_by": None,
                "hold_closed_until": None,
                "recovering_clusters": sorted(recovering),
                "total_clusters": total_clusters,
                "limit": limit,
            }
        )
        return BreakerDecision(allow=False, opens=True, closes=closes, state=opened, reason=reason)
    reason = f"{len(after)} {counts} in recovery within {window} (limit {limit})"
    if len(after) > limit:
        reason += f"; held closed by {current.closed_by} until {current.hold_closed_until}"
    allowed = current.model_copy(
        update={"recovering_clusters": sorted(after), "total_clusters": total_clusters, "limit": limit}
    )
    return BreakerDecision(allow=True, opens=False, closes=closes, state=allowed, reason=reason)


def pause(state: BreakerState, paused: PausedRecovery) -> BreakerState:
    """Remember a held-back recovery, once per event (a redelivered event is not paused twice);
    only the newest `MAX_PAUSED` are kept."""
    if any(p.event_id == paused.event_id for p in state.paused):
        return state
    return state.model_copy(update={"paused": [*state.paused, paused][-MAX_PAUSED:]})


def close_by_operator(
    state: BreakerState, *, actor: str, now: datetime, policy: BreakerPolicy
) -> tuple[BreakerState, list[PausedRecovery]]:
    """Close the breaker and hand back the paused recoveries for the caller to re-drive: their
    alarms already fired, and an alarm that stays in ALARM fires no second transition."""
    closed = state.model_copy(
        update={
            "state": "closed",
            "closed_at": format_time(now),
            "closed_by": actor,
            "hold_closed_until": format_time(now + policy.window),
            "paused": [],
        }
    )
    return closed, list(state.paused)
