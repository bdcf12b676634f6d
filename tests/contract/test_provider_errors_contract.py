"""What `Ec2Provider` makes of the errors EC2 and SSM really answer (botocore Stubber).

The state machine retries `TransientProviderError` and fails on `ProviderError`
(`restarter.adapters.aws_errors`), so each real error code must land on the right side, with the
code in `details["aws_error_code"]`. Codes SSM models are checked against the operation's modeled
errors, so a test cannot stub a code the operation never answers; EC2 models no errors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from restarter.adapters.ec2_provider import Ec2Provider
from restarter.domain.errors import InsufficientCapacityError, ProviderError, RestarterError, TransientProviderError
from tests.contract.conftest import COMMAND_ID, Stubbed, instance, reservations

IDS = ["i-0a1b2c3d4e5f60001", "i-0a1b2c3d4e5f60002"]
PARAMETER = "/restarter/clusters/cluster_abc123/environment"


class Case:
    def __init__(
        self,
        service: str,
        method: str,
        code: str,
        status: int,
        message: str,
        call: Callable[[Ec2Provider], Any],
        expected: type[RestarterError],
    ) -> None:
        self.service, self.method, self.code, self.status = service, method, code, status
        self.message, self.call, self.expected = message, call, expected

    def __repr__(self) -> str:
        return f"{self.service}.{self.method}-{self.code}"


CASES = [
    Case("ec2", "describe_instances", "RequestLimitExceeded", 503, "Request limit exceeded.",
         lambda p: p.describe_instances(IDS), TransientProviderError),
    Case("ec2", "stop_instances", "IncorrectInstanceState", 400,
         f"The instance '{IDS[0]}' is not in a state from which it can be stopped.",
         lambda p: p.stop(IDS, force=False), ProviderError),
    Case("ec2", "reboot_instances", "InvalidInstanceID.NotFound", 400,
         f"The instance ID '{IDS[1]}' does not exist", lambda p: p.reboot(IDS), ProviderError),
    Case("ec2", "modify_instance_attribute", "UnsupportedOperation", 400,
         "The instance type 'p4d.24xlarge' does not support the requested change.",
         lambda p: p.modify_instance_type(IDS[0], "p5.48xlarge"), ProviderError),
    Case("ec2", "create_replace_root_volume_task", "UnsupportedOperation", 400,
         "Replacing the root volume is not supported for instance store-backed instances.",
         lambda p: p.replace_root_volume(IDS[0], "snap-0aaaaaaaaaaaaaaaa"), ProviderError),
    Case("ec2", "start_instances", "InsufficientInstanceCapacity", 500,
         "We currently do not have sufficient p4d.24xlarge capacity in the Availability Zone you requested "
         "(us-east-1a). Our system will be working on provisioning additional capacity.",
         lambda p: p.start(IDS), InsufficientCapacityError),
    Case("ec2", "modify_volume", "RequestLimitExceeded", 503, "Request limit exceeded.",
         lambda p: p.grow_volume("vol-0aaaaaaaaaaaaaaaa", 400), TransientProviderError),
    Case("ssm", "send_command", "InvalidInstanceId", 400, "",
         lambda p: p.run_command(IDS, "health_check", {"ports": []}, 600), ProviderError),
    Case("ssm", "get_command_invocation", "InvocationDoesNotExist", 400, "",
         lambda p: p.command_invocations(COMMAND_ID, IDS[:1]), TransientProviderError),
    Case("ssm", "describe_instance_information", "ThrottlingException", 400, "Rate exceeded",
         lambda p: p.agents_online(IDS), TransientProviderError),
    Case("ssm", "send_command", "ThrottlingException", 400, "Rate exceeded",
         lambda p: p.run_patch_baseline(IDS), TransientProviderError),
    Case("ssm", "put_parameter", "ThrottlingException", 400, "Rate exceeded",
         lambda p: p.put_environment(PARAMETER, {"A": "1"}), TransientProviderError),
    Case("ssm", "get_command_invocation", "InternalServerError", 500, "An internal error occurred.",
         lambda p: p.command_invocations(COMMAND_ID, IDS[:1]), TransientProviderError),
    Case("ssm", "send_command", "InternalServerError", 500, "An internal error occurred.",
         lambda p: p.run_command(IDS, "reset_gpu", {}, 300), TransientProviderError),
    Case("ssm", "get_parameter", "ParameterVersionNotFound", 400,
         "Systems Manager could not find version 9 of /restarter/clusters/cluster_abc123/environment.",
         lambda p: p.get_environment(PARAMETER, version=9), ProviderError),
]  # fmt: skip

# SSM errors that are not modeled per operation: every operation may answer them
SSM_COMMON = {"ThrottlingException", "AccessDeniedException"}


def _operation(stubbed: Stubbed, service: str, method: str) -> str:
    client = (stubbed.ec2 if service == "ec2" else stubbed.ssm).client
    return str(client.meta.method_to_api_mapping[method])


def _ssm_errors(stubbed: Stubbed, method: str) -> set[str]:
    """The error codes SSM's model lists for the operation behind this client method."""
    model = stubbed.ssm.client.meta.service_model.operation_model(_operation(stubbed, "ssm", method))
    return {shape.name for shape in model.error_shapes}


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_a_real_error_code_becomes_the_error_the_state_machine_expects(stubbed: Stubbed, case: Case) -> None:
    # given: the service answers the code with its HTTP status
    if case.service == "ssm" and case.code not in SSM_COMMON:
        assert case.code in _ssm_errors(stubbed, case.method), f"{case.code} is not an error of ssm:{case.method}"
    stubber = stubbed.ec2 if case.service == "ec2" else stubbed.ssm
    stubber.add_client_error(
        case.method, service_error_code=case.code, service_message=case.message, http_status_code=case.status
    )
    # when
    with pytest.raises(RestarterError) as raised:
        case.call(stubbed.provider)
    # then: exactly the expected class (TransientProviderError is no ProviderError), the code in details
    error = raised.value
    assert type(error) is case.expected
    operation = f"{case.service}:{_operation(stubbed, case.service, case.method)}"
    assert error.details == {"operation": operation, "aws_error_code": case.code}
    assert isinstance(error.__cause__, ClientError)
    assert error.__cause__.response["ResponseMetadata"]["HTTPStatusCode"] == case.status
    stubbed.assert_no_pending_responses()


def test_the_second_call_of_describe_instances_names_its_own_operation(stubbed: Stubbed) -> None:
    # given: DescribeInstances answers, DescribeInstanceStatus is throttled
    stubbed.ec2.add_response(
        "describe_instances", reservations(instance(IDS[0])), expected_params={"InstanceIds": IDS[:1]}
    )
    stubbed.ec2.add_client_error("describe_instance_status", "RequestLimitExceeded", "Request limit exceeded.", 503)
    # when
    with pytest.raises(TransientProviderError) as raised:
        stubbed.provider.describe_instances(IDS[:1])
    # then
    assert raised.value.details == {"operation": "ec2:DescribeInstanceStatus", "aws_error_code": "RequestLimitExceeded"}
    stubbed.assert_no_pending_responses()


def test_a_missing_environment_parameter_is_an_empty_environment(stubbed: Stubbed) -> None:
    # given: both calls answer SSM's modeled ParameterNotFound
    for method in ("get_parameter", "delete_parameter"):
        assert "ParameterNotFound" in _ssm_errors(stubbed, method)
        stubbed.ssm.add_client_error(method, "ParameterNotFound", "", 400)
    # when
    read = stubbed.provider.get_environment(PARAMETER)
    deleted = stubbed.provider.delete_environment(PARAMETER)
    # then
    assert (read, deleted) == ({}, None)
    assert [name for name, _ in stubbed.sent] == ["GetParameter", "DeleteParameter"]
    stubbed.assert_no_pending_responses()


def test_access_denied_on_the_environment_is_not_swallowed(stubbed: Stubbed) -> None:
    # given
    denied = (
        "User: arn:aws:sts::123456789012:assumed-role/restarter/fn is not authorized to perform: ssm:DeleteParameter"
    )
    stubbed.ssm.add_client_error("delete_parameter", "AccessDeniedException", denied, 400)
    # when
    with pytest.raises(ProviderError) as raised:
        stubbed.provider.delete_environment(PARAMETER)
    # then
    assert raised.value.details["aws_error_code"] == "AccessDeniedException"
    stubbed.assert_no_pending_responses()


def test_a_request_the_model_refuses_is_a_provider_error_before_anything_is_sent(stubbed: Stubbed) -> None:
    # given: an answer queued; a parameter name needs at least one character
    stubbed.ssm.add_response("delete_parameter", {})
    # when
    with pytest.raises(ProviderError) as raised:
        stubbed.provider.delete_environment("")
    # then: botocore's ParamValidationError, translated (no SDK exception), and the answer never taken
    assert type(raised.value) is ProviderError
    assert raised.value.details["operation"] == "ssm:DeleteParameter"
    assert "ParamValidationError" in raised.value.message
    assert "valid min length: 1" in str(raised.value.__cause__)
    with pytest.raises(AssertionError, match="responses remaining"):
        stubbed.ssm.assert_no_pending_responses()


def test_no_instance_to_ask_about_is_answered_without_a_call(stubbed: Stubbed) -> None:
    # DescribeInstanceInformation's filter needs at least one id: an empty question is not sent
    assert stubbed.provider.agents_online([]) == {}
    stubbed.assert_no_pending_responses()


SSM_METHODS = [
    "send_command",
    "get_command_invocation",
    "describe_instance_information",
    "put_parameter",
    "get_parameter",
    "delete_parameter",
]


def test_every_ssm_operation_of_the_provider_models_internal_server_error(stubbed: Stubbed) -> None:
    # when
    without = [method for method in SSM_METHODS if "InternalServerError" not in _ssm_errors(stubbed, method)]
    # then: SSM's HTTP 500 is `InternalServerError`, not EC2's `InternalError`
    assert without == []
