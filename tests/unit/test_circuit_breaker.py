"""The fleet circuit breaker of alarm recovery: when it opens, pauses, closes by itself, and what an
operator close does (the paused recoveries handed back, held closed for one window)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from restarter.domain.circuit_breaker import (
    DEFAULT_MIN_CLUSTERS,
    DEFAULT_SHARE,
    DEFAULT_WINDOW,
    MAX_PAUSED,
    BreakerDecision,
    BreakerPolicy,
    BreakerState,
    PausedRecovery,
    close_by_operator,
    clusters_recovering,
    evaluate_breaker,
    pause,
    recovery_limit,
)
from restarter.domain.models import format_time
from restarter.domain.recovery import RecoveryEntry

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
POLICY = BreakerPolicy()


def entry(cluster_id: str, at: datetime, event_id: str | None = None) -> RecoveryEntry:
    return RecoveryEntry(
        cluster_id=cluster_id,
        recovered_at=format_time(at),
        alarm_name=f"gpu-xid-{cluster_id}",
        strategy="restart",
        restart_id=f"restart_{cluster_id}_{at:%H%M%S}",
        event_id=event_id or f"evt-{cluster_id}-{at:%H%M%S}",
    )


def paused(cluster_id: str, event_id: str, at: datetime = NOW) -> PausedRecovery:
    return PausedRecovery(
        cluster_id=cluster_id, event_id=event_id, alarm_name=f"gpu-xid-{cluster_id}", paused_at=format_time(at)
    )


def decide(
    state: BreakerState | None,
    cluster_id: str,
    entries: list[RecoveryEntry],
    *,
    total: int = 5,
    now: datetime = NOW,
) -> BreakerDecision:
    return evaluate_breaker(
        state,
        POLICY,
        tenant_id="t1",
        total_clusters=total,
        recovering=clusters_recovering(entries, now, POLICY.window),
        cluster_id=cluster_id,
        now=now,
    )


def burst(*cluster_ids: str, at: datetime = NOW) -> list[RecoveryEntry]:
    return [entry(c, at - timedelta(minutes=i + 1)) for i, c in enumerate(cluster_ids)]


def open_breaker() -> BreakerState:
    """The breaker of tenant t1 (5 clusters), opened by c3 while c1 and c2 are in recovery."""
    decision = decide(None, "c3", burst("c1", "c2"))
    assert decision.opens
    return pause(decision.state, paused("c3", "evt-c3"))


# ---------------------------------------------------------------- the limit and the window


def test_the_defaults_are_a_fifth_of_the_fleet_at_least_two_within_ten_minutes() -> None:
    assert (0.2, 2, timedelta(minutes=10)) == (DEFAULT_SHARE, DEFAULT_MIN_CLUSTERS, DEFAULT_WINDOW)
    assert (POLICY.share, POLICY.min_clusters, POLICY.window) == (0.2, 2, timedelta(minutes=10))


def test_the_limit_is_the_share_of_the_fleet_but_never_below_the_minimum() -> None:
    assert [recovery_limit(POLICY, total) for total in (0, 1, 5, 14, 15, 20, 100)] == [2, 2, 2, 2, 3, 4, 20]
    # a share whose float product falls just short of a whole number still counts it
    assert recovery_limit(BreakerPolicy(share=0.29), 100) == 29


def test_only_recoveries_started_within_the_window_count() -> None:
    entries = [
        entry("old", NOW - timedelta(minutes=10)),  # on the window's edge: outside
        entry("recent", NOW - timedelta(minutes=9, seconds=59)),
        entry("now", NOW),
        entry("future", NOW + timedelta(seconds=1)),
        entry("recent", NOW - timedelta(minutes=2)),
    ]

    assert clusters_recovering(entries, NOW, DEFAULT_WINDOW) == {"recent", "now"}


# ---------------------------------------------------------------- opening


def test_given_two_of_five_clusters_in_recovery_when_a_third_alarms_then_the_breaker_opens() -> None:
    # given c1 and c2 recovering; c2 itself was allowed as the second of five
    entries = burst("c1")
    second = decide(None, "c2", entries)
    assert (second.allow, second.opens) == (True, False)

    # when c3 alarms
    third = decide(second.state, "c3", burst("c1", "c2"))

    # then it is not recovered, and the breaker opens naming the counts
    assert (third.allow, third.opens, third.closes) == (False, True, False)
    assert third.reason == "3 of 5 clusters of tenant t1 would be in recovery within 10 minutes (limit 2)"
    assert third.state.state == "open"
    assert third.state.opened_at == format_time(NOW)
    assert third.state.opened_reason == third.reason
    assert (third.state.recovering_clusters, third.state.total_clusters, third.state.limit) == (["c1", "c2"], 5, 2)


def test_given_a_tenant_of_twenty_clusters_when_they_alarm_one_by_one_then_four_recover_and_the_fifth_opens() -> None:
    state: BreakerState | None = None
    entries: list[RecoveryEntry] = []
    decisions = []
    for n in range(1, 6):
        decision = decide(state, f"c{n}", entries, total=20)
        decisions.append(decision)
        state = decision.state
        if decision.allow:
            entries.append(entry(f"c{n}", NOW - timedelta(seconds=10 - n)))

    assert [d.allow for d in decisions] == [True, True, True, True, False]
    assert [d.opens for d in decisions] == [False, False, False, False, True]
    assert decisions[3].state.recovering_clusters == ["c1", "c2", "c3", "c4"]
    assert decisions[4].reason == "5 of 20 clusters of tenant t1 would be in recovery within 10 minutes (limit 4)"


def test_given_two_clusters_recovering_when_one_of_them_alarms_again_then_it_does_not_count_twice() -> None:
    # given c1 and c2 in recovery: the limit of 2 is reached
    entries = burst("c1", "c2")

    # when a second alarm of c2 arrives
    decision = decide(None, "c2", entries)

    # then the breaker stays closed and the per-cluster rules decide about c2
    assert (decision.allow, decision.opens) == (True, False)
    assert decision.state.state == "closed"
    assert decision.state.recovering_clusters == ["c1", "c2"]
    assert decision.reason == "2 of 5 clusters of tenant t1 in recovery within 10 minutes (limit 2)"


# ---------------------------------------------------------------- open: pausing and closing


def test_given_an_open_breaker_when_another_cluster_alarms_then_its_recovery_is_paused_once_per_event() -> None:
    state = open_breaker()

    # when c4 alarms while c1 and c2 are still in recovery
    decision = decide(state, "c4", burst("c1", "c2"), now=NOW + timedelta(minutes=1))
    stored = pause(decision.state, paused("c4", "evt-c4"))
    redelivered = pause(stored, paused("c4", "evt-c4"))

    # then it is paused, the breaker neither opens again nor closes
    assert (decision.allow, decision.opens, decision.closes) == (False, False, False)
    assert decision.state.state == "open"
    assert decision.state.opened_at == format_time(NOW)
    assert "recovery circuit open since" in decision.reason
    assert [p.event_id for p in redelivered.paused] == ["evt-c3", "evt-c4"]


def test_pausing_keeps_the_newest_hundred() -> None:
    state = BreakerState(tenant_id="t1", state="open")
    for n in range(MAX_PAUSED + 5):
        state = pause(state, paused(f"c{n}", f"evt-{n}"))

    assert len(state.paused) == MAX_PAUSED
    assert (state.paused[0].event_id, state.paused[-1].event_id) == ("evt-5", f"evt-{MAX_PAUSED + 4}")


def test_given_an_open_breaker_when_the_recoveries_age_out_of_the_window_then_it_closes_and_allows() -> None:
    # given the breaker opened at 09:00 by a burst of c1 and c2 (at 08:59 and 08:58)
    state = open_breaker()
    later = NOW + timedelta(minutes=8, seconds=30)

    # when c4 alarms at 09:08:30: c2's recovery (08:58) is out of the window, c1's (08:59) is not
    decision = decide(state, "c4", burst("c1", "c2"), now=later)

    # then the breaker closes by itself and c4 recovers
    assert (decision.allow, decision.opens, decision.closes) == (True, False, True)
    assert decision.state.state == "closed"
    assert decision.state.closed_at == format_time(later)
    assert decision.state.closed_by == "automatic: share fell to 1 of 5 clusters of tenant t1 (limit 2)"
    assert decision.state.recovering_clusters == ["c1", "c4"]
    # the recoveries paused while it was open stay in the state, for the caller to re-drive
    assert [p.event_id for p in decision.state.paused] == ["evt-c3"]


def test_given_an_open_breaker_when_the_share_has_not_fallen_then_the_paused_cluster_itself_stays_paused() -> None:
    # c3 alarms again: without c3, c1 and c2 still fill the limit
    decision = decide(open_breaker(), "c3", burst("c1", "c2"), now=NOW + timedelta(minutes=5))

    assert (decision.allow, decision.closes) == (False, False)
    assert decision.state.state == "open"


# ---------------------------------------------------------------- operator close


def test_given_an_open_breaker_when_an_operator_closes_it_then_the_paused_come_back_and_it_holds_closed() -> None:
    # given an open breaker holding c3's and c4's recoveries
    state = pause(open_breaker(), paused("c4", "evt-c4"))
    at = NOW + timedelta(minutes=2)

    # when an operator closes it
    closed, redrive = close_by_operator(state, actor="ops@example.com", now=at, policy=POLICY)

    # then the paused recoveries are handed back, and none stay in the state
    assert [p.event_id for p in redrive] == ["evt-c3", "evt-c4"]
    assert closed.paused == []
    assert (closed.state, closed.closed_by, closed.closed_at) == ("closed", "ops@example.com", format_time(at))
    assert closed.hold_closed_until == format_time(at + DEFAULT_WINDOW)
    assert closed.version == state.version

    # and the same burst does not reopen it within the window: c5 recovers though all 5 would be
    recovering = burst("c1", "c2", "c3", "c4", at=at + timedelta(minutes=1))
    held = decide(closed, "c5", recovering, now=at + timedelta(minutes=1))
    assert (held.allow, held.opens) == (True, False)
    assert held.state.state == "closed"
    assert "held closed by ops@example.com until" in held.reason


def test_given_an_operator_close_when_its_window_has_passed_then_the_breaker_can_open_again() -> None:
    closed, _ = close_by_operator(open_breaker(), actor="ops@example.com", now=NOW, policy=POLICY)
    after_hold = NOW + DEFAULT_WINDOW

    # when a new burst arrives once the hold is over
    decision = decide(closed, "c5", burst("c2", "c3", "c4", at=after_hold), now=after_hold)

    # then it opens again, and the operator's close is no longer its latest word
    assert (decision.allow, decision.opens) == (False, True)
    assert decision.state.state == "open"
    assert decision.state.opened_at == format_time(after_hold)
    assert (decision.state.closed_by, decision.state.hold_closed_until) == (None, None)
    assert decision.reason == "4 of 5 clusters of tenant t1 would be in recovery within 10 minutes (limit 2)"
