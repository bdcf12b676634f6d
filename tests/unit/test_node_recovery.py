"""The node recovery ladder's rules: the worst finding picks the first rung, a failed rung (or an
alarm again within the cooldown) climbs one, and stop/start is refused where it would erase data."""

from __future__ import annotations

import pytest

from restarter.domain.gpu.findings import Action
from restarter.domain.node_recovery import Rung, choose_rung, holds_local_state, rung_for, rung_request


@pytest.mark.parametrize(
    ("worst", "rung"),
    [(None, None), ("report", None), ("reset_gpu", "reset_gpu"), ("reboot", "reboot"), ("stop_start", "stop_start")],
)
def test_the_worst_finding_names_the_first_rung(worst: Action | None, rung: Rung | None) -> None:
    assert rung_for(worst) == rung


def test_given_no_finding_and_no_previous_rung_then_the_ladder_is_not_used() -> None:
    assert choose_rung("report", None, climb_from_previous=False, local_state=False) is None


def test_given_a_reboot_finding_when_first_recovered_then_the_rung_is_reboot() -> None:
    decision = choose_rung("reboot", None, climb_from_previous=False, local_state=False)
    assert decision is not None and decision.rung == "reboot" and decision.refused is None


@pytest.mark.parametrize(
    ("worst", "previous", "expected"),
    [
        ("reset_gpu", "reset_gpu", "reboot"),  # the reset did not fix it: each rung once, then the next
        ("reset_gpu", "reboot", "stop_start"),
        (None, "stop_start", "replace"),
        ("stop_start", "reset_gpu", "stop_start"),  # the finding asks for more than the climb gives
        ("replace", "reset_gpu", "replace"),
    ],
)
def test_given_the_previous_rung_failed_then_the_next_one_is_at_least_one_higher(
    worst: Action | None, previous: Rung, expected: Rung
) -> None:
    decision = choose_rung(worst, previous, climb_from_previous=True, local_state=False)
    assert decision is not None and decision.rung == expected


def test_given_a_previous_rung_that_succeeded_long_ago_then_the_finding_alone_decides() -> None:
    decision = choose_rung("reset_gpu", "stop_start", climb_from_previous=False, local_state=False)
    assert decision is not None and decision.rung == "reset_gpu"


def test_given_local_state_when_a_new_host_is_next_then_it_is_refused_and_becomes_a_replacement() -> None:
    decision = choose_rung("stop_start", None, climb_from_previous=False, local_state=True)
    assert decision is not None and decision.rung == "replace"
    assert decision.refused is not None and "instance-store" in decision.refused


@pytest.mark.parametrize(("value", "holds"), [("true", True), ("TRUE ", True), ("yes", True), ("false", False)])
def test_the_local_state_label(value: str, holds: bool) -> None:
    assert holds_local_state({"restarter:local-state": value}) is holds
    assert holds_local_state({}) is False


def test_a_reset_and_a_reboot_stop_the_workload_first_and_stop_start_is_the_seeds_forced_restart() -> None:
    assert rung_request("reset_gpu", "XidAlarm")["force"] is False
    assert rung_request("reboot", "XidAlarm")["grace_period_minutes"] == 1
    forced = rung_request("stop_start", "XidAlarm", ("the previous recovery did not fix the node",))
    assert forced["force"] is True and "grace_period_minutes" not in forced
    assert forced["restart_reason"].startswith("Error recovery - stop/start on a new host: the previous")
    assert "apply_system_updates" not in forced  # a driver update may be what broke the node
