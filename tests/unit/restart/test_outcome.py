"""domain/outcome.py: how a failed restart is named, which status it ends in, what the notes say."""

from __future__ import annotations

import pytest

from restarter.domain import outcome
from restarter.domain.errors import PhaseFailedError, RestartTimedOutError, TransientProviderError
from restarter.domain.inventory import CommandInvocation
from restarter.domain.models import AppliedChanges, ContainerSpec


@pytest.mark.parametrize(
    ("error_name", "code"),
    [
        ("RestartTimedOutError", "TIMED_OUT"),
        ("ExecutionTimedOut", "TIMED_OUT"),
        ("RestartCancelledError", "CANCELLED"),
        ("ExecutionAborted", "CANCELLED"),
        ("PhaseFailedError", "RESTART_FAILED"),
        ("States.Timeout", "RESTART_FAILED"),  # one step past its task timeout, not the restart's deadline
        ("States.TaskFailed", "RESTART_FAILED"),
        ("ExecutionFailed", "RESTART_FAILED"),
        ("UnknownError", "RESTART_FAILED"),
    ],
)
def test_given_a_task_error_name_when_coded_then_only_timeouts_and_cancels_are_special(
    error_name: str, code: str
) -> None:
    assert outcome.error_code(error_name) == code


@pytest.mark.parametrize(
    ("code", "rolled_back", "status"),
    [
        ("TIMED_OUT", True, "timed_out"),
        ("TIMED_OUT", False, "timed_out"),
        ("CANCELLED", True, "cancelled"),
        ("CANCELLED", False, "cancelled"),
        ("RESTART_FAILED", True, "rolled_back"),
        ("RESTART_FAILED", False, "failed"),
        (None, False, "failed"),
    ],
)
def test_given_an_error_code_when_the_restart_ends_then_its_status_follows_the_table(
    code: str | None, rolled_back: bool, status: str
) -> None:
    assert outcome.failure_status(code, rolled_back=rolled_back) == status


def test_given_reverted_changes_when_cleanup_concludes_then_the_restart_is_rolled_back_unless_it_gave_up() -> None:
    reverted = AppliedChanges(previous_instance_types={"i-1": "g5.xlarge"})
    container = AppliedChanges(previous_container=ContainerSpec(image="old:1"))
    nothing = AppliedChanges(grown_volumes={"vol-1": 100})

    assert outcome.status_after_cleanup("RESTART_FAILED", reverted, gave_up=False) == "rolled_back"
    assert outcome.status_after_cleanup("RESTART_FAILED", container, gave_up=False) == "rolled_back"
    assert outcome.status_after_cleanup("RESTART_FAILED", reverted, gave_up=True) == "failed"
    assert outcome.status_after_cleanup("RESTART_FAILED", nothing, gave_up=False) == "failed"
    assert outcome.status_after_cleanup("TIMED_OUT", reverted, gave_up=False) == "timed_out"


def test_given_an_abandoned_restart_when_its_status_is_decided_then_a_concluded_one_keeps_its_status() -> None:
    assert outcome.status_after_abandon("restarting", "RESTART_FAILED") == "failed"
    assert outcome.status_after_abandon("restarting", "CANCELLED") == "cancelled"
    assert outcome.status_after_abandon("rolled_back", "RESTART_FAILED") == "rolled_back"


def test_given_changes_that_cannot_be_undone_when_noted_then_each_is_said() -> None:
    changes = AppliedChanges(
        grown_volumes={"vol-1": 500}, system_updates_applied=True, replaced_root_volumes={"i-1": "task"}
    )

    assert outcome.rollback_notes(changes) == [
        outcome.STORAGE_NOTE,
        outcome.SYSTEM_UPDATES_NOTE,
        outcome.ROOT_VOLUMES_NOTE,
    ]
    assert outcome.rollback_notes(AppliedChanges()) == []
    assert (
        outcome.cleanup_failed_note("States.TaskFailed") == "cleanup failed: States.TaskFailed; cluster needs attention"
    )


def test_given_a_reverted_instance_type_when_applied_lines_are_recomputed_then_its_lines_drop_out() -> None:
    lines = {"instance_type": ["instance type: a -> b"], "storage": ["storage: 500 -> 1000 GB"]}
    applied = ["instance type: a -> b", "storage: 500 -> 1000 GB"]

    reverted = outcome.applied_after_rollback(applied, lines, AppliedChanges(previous_instance_types={"i-1": "a"}))
    untouched = outcome.applied_after_rollback(applied, lines, AppliedChanges())

    assert reverted == ["storage: 500 -> 1000 GB"]
    assert untouched == applied


@pytest.mark.parametrize(
    ("previous", "gave_up", "services_restored", "all_stopped", "status"),
    [
        ("running", False, True, False, "running"),
        ("running", False, False, False, "error"),
        ("running", True, True, False, "error"),
        ("error", False, True, False, "running"),
        ("stopped", False, False, True, "stopped"),
        ("stopped", False, False, False, "error"),
        ("stopped", True, False, True, "error"),
    ],
)
def test_given_how_cleanup_went_when_the_cluster_status_is_decided_then_it_follows_the_table(
    previous: str, gave_up: bool, services_restored: bool, all_stopped: bool, status: str
) -> None:
    decided = outcome.cluster_status_after_failure(
        previous,  # type: ignore[arg-type]
        gave_up=gave_up,
        services_restored=services_restored,
        all_stopped=all_stopped,
    )
    assert decided == status


def test_given_failed_commands_when_summarised_then_only_the_tail_of_stderr_is_kept() -> None:
    failed = [CommandInvocation("i-1", "Failed", response_code=2, stderr="x" * 1000 + "the end")]

    summary = outcome.failure_summary(failed)

    assert summary == [{"instance_id": "i-1", "status": "Failed", "response_code": 2, "stderr": summary[0]["stderr"]}]
    assert len(summary[0]["stderr"]) == outcome.STDERR_TAIL_CHARS
    assert summary[0]["stderr"].endswith("the end")


def test_given_a_step_error_when_kept_then_product_errors_keep_details_and_others_only_their_type() -> None:
    product = outcome.step_failure(PhaseFailedError("Health checks failed", {"problems": {"i-1": ["no gpu"]}}))
    timed_out = outcome.step_failure(RestartTimedOutError("late", {"phase": "rebooting"}))
    internal = outcome.step_failure(KeyError("secret-ish detail"))

    assert product == outcome.StepFailure("PHASE_FAILED", "Health checks failed", {"problems": {"i-1": ["no gpu"]}})
    assert timed_out.code == "TIMED_OUT"
    assert internal == outcome.StepFailure("INTERNAL", "KeyError", {})
    assert outcome.step_failure(TransientProviderError("slow down")).code == "PROVIDER_BUSY"


def test_given_a_task_failure_when_recorded_then_the_error_carries_its_name_and_the_steps_details() -> None:
    failure = outcome.TaskFailure("PhaseFailedError", "Health checks failed")

    error = outcome.restart_error(failure, "health_checks", {"problems": {"i-1": ["no gpu"]}})

    assert error.code == "RESTART_FAILED"
    assert error.message == "Health checks failed"
    assert error.phase == "health_checks"
    assert error.details == {"error_type": "PhaseFailedError", "problems": {"i-1": ["no gpu"]}}
    assert outcome.rolling_back_step("boom") == "Rolling back after: boom"
