"""Pure rules: phase planning and progress, estimates, instance type choice, health reports."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from restarter.domain.errors import RequestValidationError
from restarter.domain.health import workload_problems
from restarter.domain.inventory import InstanceTypeInfo
from restarter.domain.models import PortMapping, RestartRequest, RestartTarget
from restarter.domain.planning import estimate_completion, plan_phases, poll_delay, progress_at
from restarter.domain.rules import choose_instance_type


def test_the_seeds_example_is_step_two_of_eight_at_25_percent() -> None:
    # The seed's response: configuration updates and system updates, graceful, no checkpoint.
    request = RestartRequest.model_validate(
        {"apply_system_updates": True, "update_docker_image": "tensorone/pytorch:2.2"}
    )
    target = RestartTarget(image="tensorone/pytorch:2.2", apply_system_updates=True)

    plan = plan_phases(request, target, cluster_running=True)
    progress = progress_at(plan, "stopping_processes")

    assert len(plan) == 8
    assert (progress.phase, progress.steps_completed, progress.total_steps, progress.percentage) == (
        "stopping_processes",
        2,
        8,
        25,
    )
    assert progress.current_step == "Gracefully stopping running processes"
    # and the seed's estimate: 8 minutes after initiation (stop 2 + config 1.5 + reboot 3 + start 1 + health 0.5)
    started = datetime(2024, 1, 15, 17, 0, tzinfo=UTC)
    assert estimate_completion(started, plan, request) == datetime(2024, 1, 15, 17, 8, tzinfo=UTC)


def test_plan_includes_checkpoint_only_with_preserve_state_and_skips_stop_when_forced() -> None:
    forced = RestartRequest.model_validate({"force": True, "preserve_state": True})
    plan = plan_phases(forced, RestartTarget(), cluster_running=True)
    assert plan == [
        "validating",
        "acquiring_lock",
        "creating_checkpoint",
        "rebooting",
        "starting_services",
        "health_checks",
        "ready",
    ]
    assert progress_at(plan, "ready").percentage == 100


def test_a_short_grace_period_shortens_the_estimate() -> None:
    started = datetime(2024, 1, 15, 17, 0, tzinfo=UTC)
    quick = RestartRequest.model_validate({"grace_period_minutes": 0})
    plan = plan_phases(quick, RestartTarget(), cluster_running=True)
    assert (estimate_completion(started, plan, quick) - started).total_seconds() == 30 + 180 + 60 + 30


def test_first_poll_waits_about_the_expected_duration_then_backs_off_capped() -> None:
    delays = [poll_delay("rebooting", attempt) for attempt in range(8)]
    assert delays[0] == 180  # the vendor guide: a reboot takes 3 to 5 minutes
    assert delays[1:] == [10, 20, 40, 60, 60, 60, 60]


G5 = [
    InstanceTypeInfo("g5.xlarge", 4, 16, 1, "A10G"),
    InstanceTypeInfo("g5.2xlarge", 8, 32, 1, "A10G"),
    InstanceTypeInfo("g5.4xlarge", 16, 64, 1, "A10G"),
    InstanceTypeInfo("g5.12xlarge", 48, 192, 4, "A10G"),
    InstanceTypeInfo("g5.48xlarge", 192, 768, 8, "A10G"),
]


@pytest.mark.parametrize(
    ("cpu", "memory", "gpus", "expected"),
    [
        (16, None, None, "g5.4xlarge"),
        (None, 48, None, "g5.4xlarge"),
        (None, None, 4, "g5.12xlarge"),
        (64, 512, 8, "g5.48xlarge"),
        (2, None, None, "g5.xlarge"),
    ],
)
def test_the_smallest_type_of_the_family_that_fits_is_chosen(
    cpu: int | None, memory: int | None, gpus: int | None, expected: str
) -> None:
    chosen = choose_instance_type(G5[0], G5, cpu_cores=cpu, memory_gb=memory, gpu_count=gpus)
    assert chosen.name == expected


def test_no_type_that_fits_is_a_validation_error_listing_the_family() -> None:
    with pytest.raises(RequestValidationError) as refused:
        choose_instance_type(G5[0], G5, cpu_cores=None, memory_gb=None, gpu_count=2)
    assert [t["type"] for t in refused.value.details["available"]] == [t.name for t in G5]


PORTS = [PortMapping(internal_port=8888, external_port=30888)]
HEALTHY = "\n".join(["container: running tensorone/pytorch:2.1", "port: tcp/30888 open"])


def test_a_running_container_with_its_ports_open_has_no_problem() -> None:
    assert workload_problems(HEALTHY, expected_image="tensorone/pytorch:2.1", ports=PORTS) == []


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        (
            HEALTHY.replace("container: running tensorone/pytorch:2.1", "container: exited tensorone/pytorch:2.1"),
            "workload container exited",
        ),
        (HEALTHY.replace("tensorone/pytorch:2.1", "tensorone/pytorch:2.0"), "workload runs tensorone/pytorch:2.0"),
        (HEALTHY.replace("tcp/30888 open", "tcp/30888 closed"), "port tcp/30888 (container port 8888) not answering"),
        ("", "workload container missing"),
    ],
)
def test_each_missing_workload_fact_is_a_named_problem(section: str, problem: str) -> None:
    problems = workload_problems(section, expected_image="tensorone/pytorch:2.1", ports=PORTS)
    assert any(p.startswith(problem) for p in problems), problems
