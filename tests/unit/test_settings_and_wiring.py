"""Settings (every function's environment, validated once) and wiring (each set built once, lazily)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from restarter import wiring
from restarter.adapters.clock import SystemClock
from restarter.domain.errors import RestarterError
from restarter.settings import Settings, SettingsError
from restarter_local.template import load_template

# read by Powertools itself, not by the settings
POWERTOOLS_VARIABLES = {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "LOG_LEVEL"}


def template_variables() -> set[str]:
    template = load_template()
    names = set(template["Globals"]["Function"]["Environment"]["Variables"])
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            names |= set(resource["Properties"].get("Environment", {}).get("Variables", {}))
    return names


def test_every_variable_of_every_function_is_a_setting() -> None:
    variables = template_variables()
    assert variables - POWERTOOLS_VARIABLES <= set(Settings.variables())
    assert {"STATE_MACHINE_ARN", "ROLLOUT_STATE_MACHINE_ARN", "RECOVERY_TABLE", "SCHEDULE_TARGET_ARN"} <= variables


def test_an_empty_environment_gives_the_defaults_and_a_blank_value_counts_as_unset() -> None:
    settings = Settings.from_environment({"RECOVERY_TABLE": "  ", "AWS_DEFAULT_REGION": "eu-west-1"})
    assert settings == Settings(region="eu-west-1")
    assert settings.recovery_table == "restarter-recovery"
    assert settings.state_machine_arn is None
    assert Settings.from_environment({"AWS_REGION": "us-west-2", "AWS_DEFAULT_REGION": "eu-west-1"}).region == (
        "us-west-2"
    )


def test_the_environment_is_read_under_the_variables_names() -> None:
    arn = "arn:aws:states:us-east-1:123456789012:stateMachine:restart"
    settings = Settings.from_environment(
        {"CLUSTERS_TABLE": "prod-clusters", "STATE_MACHINE_ARN": arn, "API_WAIT_BUDGET_SECONDS": "10.5"}
    )
    assert (settings.clusters_table, settings.state_machine_arn, settings.api_wait_budget_seconds) == (
        "prod-clusters",
        arn,
        10.5,
    )
    with pytest.raises(ValueError):
        settings.clusters_table = "other"  # type: ignore[misc]  # frozen


def test_wrong_values_fail_once_with_one_message_naming_every_variable_but_no_value() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_environment(
            {"API_WAIT_BUDGET_SECONDS": "soon", "ROLLOUT_STATE_MACHINE_ARN": "restart-machine", "AWS_REGION": "x"}
        )
    message = str(raised.value)
    assert message.startswith("Invalid environment: ")
    for name in ("API_WAIT_BUDGET_SECONDS", "ROLLOUT_STATE_MACHINE_ARN", "AWS_REGION"):
        assert name in message
    assert "soon" not in message and "restart-machine" not in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_importing_the_handlers_reads_no_setting_and_builds_nothing() -> None:
    code = """
import json, os
os.environ["API_WAIT_BUDGET_SECONDS"] = "not a number"  # reading it now would raise
import restarter.handlers.alarm, restarter.handlers.authorizer, restarter.handlers.queue
import restarter.handlers.rollout_step, restarter.handlers.schedule, restarter.handlers.start_restart
from restarter.settings import get_settings
from restarter import wiring
print(json.dumps([get_settings.cache_info().currsize, wiring._dependencies._built is None]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [0, True]


@pytest.fixture
def shared() -> Iterator[wiring.Dependencies]:
    deps = wiring.build_dependencies(Settings(), clock=SystemClock())
    wiring.use_dependencies(deps)
    yield deps
    wiring.use_dependencies(None)
    for use in (wiring.use_rollout_dependencies, wiring.use_alarm_recovery, wiring.use_queue_dependencies):
        use(None)


def test_building_the_sets_makes_no_client(shared: wiring.Dependencies) -> None:
    queue = wiring.get_queue_dependencies()
    wiring.get_alarm_recovery()
    assert queue.deps is shared and queue.rollouts is wiring.get_rollout_dependencies()
    assert shared.clients is not None and shared.clients.made() == []


def test_a_set_is_built_once_and_again_when_the_shared_one_is_replaced(shared: wiring.Dependencies) -> None:
    rollouts = wiring.get_rollout_dependencies()
    queue = wiring.get_queue_dependencies()
    assert wiring.get_rollout_dependencies() is rollouts and wiring.get_queue_dependencies() is queue

    replacement = wiring.build_dependencies(Settings(rollouts_table="other-rollouts"))
    wiring.use_dependencies(replacement)
    rebuilt = wiring.get_rollout_dependencies()
    assert rebuilt is not rollouts and rebuilt.deps is replacement
    assert wiring.get_queue_dependencies().rollouts is rebuilt


def test_an_installed_set_wins_until_it_is_removed(shared: wiring.Dependencies) -> None:
    installed = wiring.build_rollout_dependencies(shared, table="installed-rollouts")
    wiring.use_rollout_dependencies(installed)
    assert wiring.get_rollout_dependencies() is installed
    assert wiring.get_queue_dependencies().rollouts is installed
    wiring.use_rollout_dependencies(None)
    assert wiring.get_rollout_dependencies() is not installed


def test_schedules_without_a_target_are_refused_when_used() -> None:
    deps = wiring.build_dependencies(Settings())
    with pytest.raises(RestarterError, match="Schedules are not configured") as raised:
        wiring.build_schedule_gateway(deps)
    assert raised.value.details == {"settings": ["SCHEDULE_TARGET_ARN", "SCHEDULER_ROLE_ARN"]}
