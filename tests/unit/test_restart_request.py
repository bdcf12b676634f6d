"""The restart request: every field of the seed's table, its default, its bound, and the
validation error that names the offending field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from restarter.domain.errors import RequestValidationError
from restarter.domain.models import RestartRequest
from restarter.domain.validation import parse_restart_request
from tests.conftest import load_event


def test_defaults_are_the_seeds() -> None:
    request = parse_restart_request({})
    assert request.force is False
    assert request.grace_period_minutes == 5
    assert request.wait_for_ready is False
    assert request.timeout_minutes == 15
    assert request.preserve_state is False
    assert request.apply_system_updates is False
    assert request.update_configuration is None
    assert request.environment_updates is None
    assert request.port_mapping_updates is None
    assert request.restart_reason is None
    assert request.restore_from_snapshot is None
    assert request.update_docker_image is None
    assert request.restart_type == "graceful"


@pytest.mark.parametrize(
    "event", ["start_restart_basic.json", "start_restart_config_updates.json", "start_restart_force_snapshot.json"]
)
def test_the_seeds_three_curl_bodies_are_valid(event: str) -> None:
    request = parse_restart_request(load_event(event)["request"])
    assert request.wait_for_ready is True


def test_the_seeds_port_mapping_example_means_auto_assign() -> None:
    request = parse_restart_request(load_event("start_restart_force_snapshot.json")["request"])
    assert request.force is True and request.restart_type == "force"
    [port] = request.port_mapping_updates or []
    assert (port.internal_port, port.external_port, port.protocol, port.description) == (
        8080,
        0,
        "tcp",
        "Web Interface",
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"force": "yes"}, "force"),
        ({"force": 1}, "force"),
        ({"grace_period_minutes": -1}, "grace_period_minutes"),
        ({"grace_period_minutes": 31}, "grace_period_minutes"),
        ({"grace_period_minutes": 2.5}, "grace_period_minutes"),
        ({"grace_period_minutes": "5"}, "grace_period_minutes"),
        ({"wait_for_ready": "true"}, "wait_for_ready"),
        ({"timeout_minutes": 0}, "timeout_minutes"),
        ({"timeout_minutes": 61}, "timeout_minutes"),
        ({"preserve_state": None}, "preserve_state"),
        ({"update_configuration": "big"}, "update_configuration"),
        ({"update_configuration": {"cpu_cores": 0}}, "update_configuration.cpu_cores"),
        ({"update_configuration": {"memory_gb": -4}}, "update_configuration.memory_gb"),
        ({"update_configuration": {"storage_gb": 0}}, "update_configuration.storage_gb"),
        ({"update_configuration": {"gpu_count": 17}}, "update_configuration.gpu_count"),
        ({"update_configuration": {"region": "mars-1"}}, "update_configuration.region"),
        ({"update_configuration": {"disk_type": "nvme"}}, "update_configuration.disk_type"),
        ({"environment_updates": ["A=1"]}, "environment_updates"),
        ({"environment_updates": {"1BAD": "x"}}, "environment_updates.1BAD.[key]"),
        ({"environment_updates": {"BAD-NAME": "x"}}, "environment_updates.BAD-NAME.[key]"),
        ({"environment_updates": {"GOOD": 5}}, "environment_updates.GOOD"),
        ({"environment_updates": {"GOOD": "x" * 4097}}, "environment_updates.GOOD"),
        ({"port_mapping_updates": {"internal_port": 80}}, "port_mapping_updates"),
        ({"port_mapping_updates": [{"external_port": 0}]}, "port_mapping_updates[0].internal_port"),
        ({"port_mapping_updates": [{"internal_port": 0}]}, "port_mapping_updates[0].internal_port"),
        ({"port_mapping_updates": [{"internal_port": 70000}]}, "port_mapping_updates[0].internal_port"),
        (
            {"port_mapping_updates": [{"internal_port": 80, "external_port": -1}]},
            "port_mapping_updates[0].external_port",
        ),
        ({"port_mapping_updates": [{"internal_port": 80, "protocol": "icmp"}]}, "port_mapping_updates[0].protocol"),
        (
            {"port_mapping_updates": [{"internal_port": 80, "description": "d" * 201}]},
            "port_mapping_updates[0].description",
        ),
        ({"port_mapping_updates": [{"internal_port": 80, "url": "x"}]}, "port_mapping_updates[0].url"),
        ({"port_mapping_updates": [{"internal_port": 80}, {"internal_port": 80}]}, "port_mapping_updates"),
        ({"restart_reason": "r" * 501}, "restart_reason"),
        ({"restart_reason": 42}, "restart_reason"),
        ({"restore_from_snapshot": "backup-1"}, "restore_from_snapshot"),
        ({"update_docker_image": "Not An Image"}, "update_docker_image"),
        ({"update_docker_image": ""}, "update_docker_image"),
        ({"apply_system_updates": "no"}, "apply_system_updates"),
        ({"restart_now": True}, "restart_now"),
        ({"environment_updates": {f"VAR_{i}": "v" * 2000 for i in range(5)}}, "environment_updates"),
        ({"grace_period_minutes": 15}, "grace_period_minutes"),  # the default timeout is 15
        ({"grace_period_minutes": 20, "timeout_minutes": 20}, "grace_period_minutes"),
    ],
)
def test_each_invalid_field_is_named_in_the_validation_error(body: dict[str, Any], field: str) -> None:
    with pytest.raises(RequestValidationError) as refused:
        parse_restart_request(body)

    envelope = refused.value.to_envelope()
    assert envelope["success"] is False
    assert envelope["error"]["code"] == "VALIDATION_ERROR"
    fields = [e["field"] for e in envelope["error"]["details"]["errors"]]
    assert field in fields
    assert field.split(".")[0].split("[")[0] in envelope["error"]["message"]


def test_a_graceful_stop_must_fit_in_the_timeout_but_a_forced_restart_skips_it() -> None:
    # the seed's maintenance example: grace 15 within a 20 minute timeout
    assert parse_restart_request({"grace_period_minutes": 15, "timeout_minutes": 20}).grace_period_minutes == 15
    # the bounds themselves are accepted
    assert parse_restart_request({"grace_period_minutes": 30, "timeout_minutes": 60}).timeout_minutes == 60
    # a forced restart does no graceful stop, so its grace period does not count
    assert parse_restart_request({"force": True, "grace_period_minutes": 30, "timeout_minutes": 1}).force
    with pytest.raises(RequestValidationError) as refused:
        parse_restart_request({"grace_period_minutes": 30, "timeout_minutes": 30})
    assert "must be less than timeout_minutes (30)" in refused.value.details["errors"][0]["message"]


def test_the_environment_must_fit_one_parameter_and_its_size_error_quotes_no_value() -> None:
    values = {f"VAR_{i}": "secret" + "v" * 1994 for i in range(5)}
    with pytest.raises(RequestValidationError) as refused:
        parse_restart_request({"environment_updates": values})
    rendered = json.dumps(refused.value.to_envelope())
    assert "at most 8192" in rendered and "secretv" not in rendered
    # four such values (about 8 KB of JSON) still fit
    assert parse_restart_request({"environment_updates": dict(list(values.items())[:4])}).environment_updates


def test_a_body_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(RequestValidationError) as refused:
        parse_restart_request(["force"])
    assert refused.value.details["errors"][0]["field"] == "body"


def test_validation_errors_never_echo_submitted_values() -> None:
    secret = "sk_live_do_not_print_" + "x" * 4096
    with pytest.raises(RequestValidationError) as refused:
        parse_restart_request({"environment_updates": {"API_KEY": secret}, "grace_period_minutes": 99})
    rendered = json.dumps(refused.value.to_envelope()) + str(refused.value)
    assert "sk_live_do_not_print_" not in rendered
    assert "99" not in rendered


def test_redacted_request_hides_environment_values_but_keeps_names() -> None:
    request = RestartRequest.model_validate({"environment_updates": {"TOKEN": "s3cr3t", "OLD": None}})
    assert request.redacted()["environment_updates"] == {"TOKEN": "<redacted>", "OLD": None}
    assert "s3cr3t" not in json.dumps(request.redacted())
