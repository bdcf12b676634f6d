"""Step Functions, EventBridge Scheduler, EventBridge, SQS and CloudWatch adapters against the
services' real models, offline: every request validated by botocore (and the model's limits, see
`stub_clients`), every stubbed answer validated against the operation's output shape, every error
code one the operation declares (or, `declared=False`, one the service is known to send unmodelled).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.stub import Stubber

from restarter.adapters.alarms import AlarmTags
from restarter.adapters.events import EventPublisher
from restarter.adapters.queues import MessageVisibility
from restarter.adapters.scheduler import ScheduleGateway, firing_input
from restarter.adapters.stepfunctions import ExecutionStarter
from restarter.domain.errors import (
    ConflictError,
    NotFoundError,
    ProviderError,
    RequestValidationError,
    TransientProviderError,
)
from restarter.domain.rollouts import RolloutTargets
from restarter.domain.schedules import ScheduleRequest
from restarter.services.ended_executions import CLEANUP_SUFFIX
from tests.contract.dynamodb_stubs import add_error, rollout_record, stub_clients

ACCOUNT = "123456789012"
MACHINE = f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:RestartStateMachine"
EXECUTION = f"arn:aws:states:us-east-1:{ACCOUNT}:execution:RestartStateMachine:rst_0a1b2c"
STARTED = datetime(2026, 1, 5, 9, 0, 1, tzinfo=UTC)
PAYLOAD = {"restart_id": "rst_0a1b2c", "cluster_id": "cls_a1"}
START = {"stateMachineArn": MACHINE, "name": "rst_0a1b2c", "input": json.dumps(PAYLOAD)}


@pytest.fixture
def stubbed() -> Iterator[Callable[[str], tuple[Any, Stubber]]]:
    yield from stub_clients()


def refused(run: Callable[[], Any], error: type[Exception], code: str) -> None:
    with pytest.raises(error) as raised:
        run()
    assert raised.type is error  # TransientProviderError is no ProviderError, nor the reverse
    assert raised.value.details["aws_error_code"] == code  # type: ignore[attr-defined]


# ---------------------------------------------------------------- Step Functions


def test_given_a_state_machine_when_an_execution_starts_then_its_arn_is_the_one_known_before(stubbed: Any) -> None:
    client, stubber = stubbed("stepfunctions")
    starter = ExecutionStarter(client, MACHINE)
    stubber.add_response("start_execution", {"executionArn": EXECUTION, "startDate": STARTED}, START)
    stubber.add_response("start_execution", {"executionArn": EXECUTION, "startDate": STARTED}, START)

    assert starter.start("rst_0a1b2c", PAYLOAD) == EXECUTION
    assert starter.start_once("rst_0a1b2c", PAYLOAD) == EXECUTION
    assert starter.execution_arn("rst_0a1b2c") == EXECUTION
    stubber.assert_no_pending_responses()


def test_given_the_longest_names_the_services_make_when_started_then_step_functions_takes_them(stubbed: Any) -> None:
    """Execution names are at most 80 characters: a rollout's longest id at a late attempt, a
    restart's cleanup execution (the limit check in `stub_clients` refuses anything longer)."""
    client, stubber = stubbed("stepfunctions")
    rollout = rollout_record().model_copy(update={"rollout_id": "rol_" + "x" * 64, "attempt": 999})
    names = [rollout.execution_name, f"rst_{'f' * 16}{CLEANUP_SUFFIX}"]
    for name in names:
        stubber.add_response(
            "start_execution", {"executionArn": EXECUTION, "startDate": STARTED}, {**START, "name": name}
        )
    starter = ExecutionStarter(client, MACHINE)

    assert [starter.start_once(name, PAYLOAD) for name in names] == [EXECUTION, EXECUTION]
    assert max(len(name) for name in names) <= 80
    stubber.assert_no_pending_responses()


def test_given_an_execution_of_that_name_when_started_once_then_the_existing_execution_is_answered(
    stubbed: Any,
) -> None:
    client, stubber = stubbed("stepfunctions")
    add_error(client, stubber, ("start_execution", START, {}), "ExecutionAlreadyExists")

    assert ExecutionStarter(client, MACHINE).start_once("rst_0a1b2c", PAYLOAD) == EXECUTION
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("code", "error", "declared"),
    [
        ("StateMachineDoesNotExist", ProviderError, True),
        ("InvalidExecutionInput", ProviderError, True),
        ("ThrottlingException", TransientProviderError, False),  # sent by the service, not modelled
    ],
)
@pytest.mark.parametrize("method", ["start", "start_once"])
def test_given_step_functions_refuses_when_an_execution_starts_then_the_refusal_is_translated(
    stubbed: Any, method: str, code: str, error: type[Exception], declared: bool
) -> None:
    client, stubber = stubbed("stepfunctions")
    add_error(client, stubber, ("start_execution", START, {}), code, declared=declared)
    starter = ExecutionStarter(client, MACHINE)

    refused(lambda: getattr(starter, method)("rst_0a1b2c", PAYLOAD), error, code)
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize(("status", "running"), [("RUNNING", True), ("SUCCEEDED", False), ("PENDING_REDRIVE", False)])
def test_given_an_execution_when_described_then_status_and_running_come_from_its_status(
    stubbed: Any, status: str, running: bool
) -> None:
    client, stubber = stubbed("stepfunctions")
    described = {"executionArn": EXECUTION, "stateMachineArn": MACHINE, "name": "rst_0a1b2c", "status": status}
    for _ in range(2):
        stubber.add_response("describe_execution", {**described, "startDate": STARTED}, {"executionArn": EXECUTION})
    starter = ExecutionStarter(client, MACHINE)

    assert (starter.status(EXECUTION), starter.is_running(EXECUTION)) == (status, running)
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize("code", ["ExecutionDoesNotExist", "InvalidArn"])
def test_given_an_execution_step_functions_does_not_know_when_asked_if_running_then_it_is_not(
    stubbed: Any, code: str
) -> None:
    client, stubber = stubbed("stepfunctions")
    add_error(client, stubber, ("describe_execution", {"executionArn": EXECUTION}, {}), code)
    add_error(client, stubber, ("describe_execution", {"executionArn": EXECUTION}, {}), code)
    starter = ExecutionStarter(client, MACHINE)

    assert starter.is_running(EXECUTION) is False
    refused(lambda: starter.status(EXECUTION), ProviderError, code)
    stubber.assert_no_pending_responses()


def test_given_a_throttled_describe_when_asked_if_running_then_it_raises_rather_than_guess(stubbed: Any) -> None:
    client, stubber = stubbed("stepfunctions")
    add_error(client, stubber, "describe_execution", "ThrottlingException", declared=False)

    refused(
        lambda: ExecutionStarter(client, MACHINE).is_running(EXECUTION), TransientProviderError, "ThrottlingException"
    )
    stubber.assert_no_pending_responses()


def test_given_a_running_execution_when_stopped_then_it_is_stopped_as_cancelled_with_the_cause(stubbed: Any) -> None:
    client, stubber = stubbed("stepfunctions")
    request = {"executionArn": EXECUTION, "error": "Cancelled", "cause": "Cancelled by key:0a1b2c3d"}
    stubber.add_response("stop_execution", {"stopDate": STARTED}, request)
    add_error(client, stubber, ("stop_execution", request, {}), "ExecutionDoesNotExist")
    starter = ExecutionStarter(client, MACHINE)

    starter.stop(EXECUTION, "Cancelled by key:0a1b2c3d")
    refused(lambda: starter.stop(EXECUTION, "Cancelled by key:0a1b2c3d"), ProviderError, "ExecutionDoesNotExist")
    stubber.assert_no_pending_responses()


# ---------------------------------------------------------------- EventBridge Scheduler

GROUP = "restarter-t1"
GROUP_ARN = f"arn:aws:scheduler:us-east-1:{ACCOUNT}:schedule-group/{GROUP}"
SCHEDULE_ARN = f"arn:aws:scheduler:us-east-1:{ACCOUNT}:schedule/{GROUP}/nightly"
TARGET = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:restarter-ScheduledRolloutFunction"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/restarter-SchedulerRole"
DLQ = f"arn:aws:sqs:us-east-1:{ACCOUNT}:restarter-schedule-dlq"
REQUEST = ScheduleRequest(
    name="nightly",
    schedule_expression="cron(0 2 * * ? *)",
    timezone="Europe/Berlin",
    window_minutes=120,
    flexible_window_minutes=15,
    description="Nightly driver update of the training fleet",
    rollout=RolloutTargets(labels={"team": "research"}, request={"grace_period_minutes": 10}),
)
CREATE = {
    "GroupName": GROUP,
    "Name": "nightly",
    "ScheduleExpression": "cron(0 2 * * ? *)",
    "ScheduleExpressionTimezone": "Europe/Berlin",
    "FlexibleTimeWindow": {"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 15},
    "Target": {
        "Arn": TARGET,
        "RoleArn": ROLE,
        "Input": firing_input(REQUEST, "t1"),
        "RetryPolicy": {"MaximumRetryAttempts": 3, "MaximumEventAgeInSeconds": 3600},
        "DeadLetterConfig": {"Arn": DLQ},
    },
    "State": "ENABLED",
    "ActionAfterCompletion": "NONE",
    "Description": "Nightly driver update of the training fleet",
}
CREATED = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
DESCRIBED = {
    **CREATE,
    "Arn": SCHEDULE_ARN,
    "CreationDate": CREATED,
    "LastModificationDate": CREATED,
}


def gateway(client: Any) -> ScheduleGateway:
    return ScheduleGateway(client, target_arn=TARGET, role_arn=ROLE, dead_letter_arn=DLQ)


def test_given_a_request_when_its_schedule_is_created_read_listed_and_deleted_then_scheduler_gets_it_whole(
    stubbed: Any,
) -> None:
    # given Scheduler's answers to one schedule's life
    client, stubber = stubbed("scheduler")
    stubber.add_response("create_schedule", {"ScheduleArn": SCHEDULE_ARN}, CREATE)
    stubber.add_response("get_schedule", DESCRIBED, {"GroupName": GROUP, "Name": "nightly"})
    summary = {"Arn": SCHEDULE_ARN, "GroupName": GROUP, "State": "ENABLED", "Target": {"Arn": TARGET}}
    listing = {"GroupName": GROUP, "MaxResults": 100}
    stubber.add_response("list_schedules", {"Schedules": [{**summary, "Name": "weekly"}], "NextToken": "t2"}, listing)
    stubber.add_response(
        "list_schedules", {"Schedules": [{**summary, "Name": "nightly"}]}, {**listing, "NextToken": "t2"}
    )
    stubber.add_response("delete_schedule", {}, {"GroupName": GROUP, "Name": "nightly"})
    schedules = gateway(client)

    # when it is created, read back, listed and deleted
    arn = schedules.create(GROUP, REQUEST, "t1")
    view = schedules.get(GROUP, "nightly")
    names = schedules.list_names(GROUP)
    schedules.delete(GROUP, "nightly")

    # then the view is the request, as the API shows it
    assert arn == SCHEDULE_ARN
    assert (view.name, view.arn, view.timezone, view.flexible_window_minutes, view.window_minutes) == (
        "nightly",
        SCHEDULE_ARN,
        "Europe/Berlin",
        15,
        120,
    )
    assert (view.enabled, view.created_at, view.rollout) == (
        True,
        "2026-01-05T09:00:00Z",
        REQUEST.rollout.model_dump(mode="json", exclude_unset=True),
    )
    assert names == ["nightly", "weekly"]
    stubber.assert_no_pending_responses()


def test_given_a_missing_group_when_ensured_then_it_is_created_and_a_group_created_meanwhile_is_fine(
    stubbed: Any,
) -> None:
    client, stubber = stubbed("scheduler")
    group = {"Arn": GROUP_ARN, "Name": GROUP, "State": "ACTIVE", "CreationDate": CREATED}
    stubber.add_response("get_schedule_group", group, {"Name": GROUP})
    for created_meanwhile in (False, True):
        add_error(client, stubber, ("get_schedule_group", {"Name": GROUP}, {}), "ResourceNotFoundException")
        create = ("create_schedule_group", {"Name": GROUP}, {})
        if created_meanwhile:
            add_error(client, stubber, create, "ConflictException")
        else:
            stubber.add_response(create[0], {"ScheduleGroupArn": GROUP_ARN}, create[1])
    schedules = gateway(client)

    for _ in range(3):  # exists; missing, created; missing, created by another caller meanwhile
        schedules.ensure_group(GROUP)

    stubber.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("method", "code", "error"),
    [
        ("create", "ConflictException", ConflictError),
        ("create", "ValidationException", RequestValidationError),
        ("create", "ResourceNotFoundException", ProviderError),  # no group: ensure_group comes first
        ("create", "ThrottlingException", TransientProviderError),
        ("get", "ResourceNotFoundException", NotFoundError),
        ("get", "ThrottlingException", TransientProviderError),
        ("delete", "ResourceNotFoundException", NotFoundError),
        ("delete", "ConflictException", ProviderError),
        ("list_names", "ThrottlingException", TransientProviderError),
        ("ensure_group", "ValidationException", ProviderError),
    ],
)
def test_given_scheduler_refuses_when_the_gateway_calls_it_then_the_refusal_means_what_the_api_answers(
    stubbed: Any, method: str, code: str, error: type[Exception]
) -> None:
    client, stubber = stubbed("scheduler")
    operation = {"create": "create_schedule", "get": "get_schedule", "delete": "delete_schedule"}
    add_error(
        client, stubber, operation.get(method, {"list_names": "list_schedules"}.get(method, "get_schedule_group")), code
    )
    args = {"create": (GROUP, REQUEST, "t1"), "ensure_group": (GROUP,), "list_names": (GROUP,)}.get(
        method, (GROUP, "nightly")
    )

    with pytest.raises(error) as raised:
        getattr(gateway(client), method)(*args)

    assert raised.type is error
    if error in (ProviderError, TransientProviderError):
        assert raised.value.details["aws_error_code"] == code  # type: ignore[attr-defined]
    if error is RequestValidationError:
        assert raised.value.details["errors"][0]["message"] == code  # type: ignore[attr-defined]
    stubber.assert_no_pending_responses()


def test_given_no_group_when_its_schedules_are_listed_then_there_are_none(stubbed: Any) -> None:
    client, stubber = stubbed("scheduler")
    add_error(
        client, stubber, ("list_schedules", {"GroupName": GROUP, "MaxResults": 100}, {}), "ResourceNotFoundException"
    )

    assert gateway(client).list_names(GROUP) == []
    stubber.assert_no_pending_responses()


# ---------------------------------------------------------------- EventBridge

BUS = "restarter-events"
DETAIL = {"restart_id": "rst_0a1b2c", "cluster_id": "cls_a1", "status": "ready"}
ENTRY = {
    "Source": "restarter",
    "DetailType": "Restart Completed",
    "Detail": json.dumps(DETAIL),
    "EventBusName": BUS,
    "Resources": [f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/i-0123456789abcdef0"],
}


@pytest.fixture
def not_published() -> Iterator[Callable[[], float]]:
    """How many events were counted as not published (Powertools metrics live for the process)."""
    from restarter.observability import metrics

    metrics.clear_metrics()
    yield lambda: sum(metrics.metric_set.get("EventsNotPublished", {}).get("Value", []))
    metrics.clear_metrics()


def publish(client: Any) -> bool:
    return EventPublisher(client, BUS).publish("Restart Completed", DETAIL, ENTRY["Resources"])


def test_given_the_bus_takes_the_event_when_published_then_it_is_true(stubbed: Any, not_published: Any) -> None:
    client, stubber = stubbed("events")
    answer = {"FailedEntryCount": 0, "Entries": [{"EventId": "11710aed-b79e-4468-a20b-bb3c0c3b4860"}]}
    stubber.add_response("put_events", answer, {"Entries": [ENTRY]})

    assert publish(client) is True
    assert not_published() == 0
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize("entry_error", ["ThrottlingException", "InternalFailure"])
def test_given_the_bus_refuses_the_entry_in_a_200_answer_when_published_then_it_is_false_and_counted(
    stubbed: Any, not_published: Any, entry_error: str
) -> None:
    client, stubber = stubbed("events")
    answer = {"FailedEntryCount": 1, "Entries": [{"ErrorCode": entry_error, "ErrorMessage": "Rate exceeded"}]}
    stubber.add_response("put_events", answer, {"Entries": [ENTRY]})

    assert publish(client) is False
    assert not_published() == 1
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize(("code", "declared"), [("InternalException", True), ("ThrottlingException", False)])
def test_given_the_bus_fails_the_call_when_published_then_it_is_false_and_the_restart_goes_on(
    stubbed: Any, not_published: Any, code: str, declared: bool
) -> None:
    client, stubber = stubbed("events")
    add_error(client, stubber, ("put_events", {"Entries": [ENTRY]}, {}), code, declared=declared)

    assert publish(client) is False
    assert not_published() == 1
    stubber.assert_no_pending_responses()


# ---------------------------------------------------------------- SQS, CloudWatch

QUEUE = f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/restarter-restart-requests"
RECEIPT = "AQEBzWwaftRI0KuVm4tP+/7q1rGgNqicHq8XzxBOGAfMwvfNFkQ+Yg5jn3ZLnN4tx3dt4b3vb7RoOKQh4Q0NKsJr7bqa"
ALARM = f"arn:aws:cloudwatch:us-east-1:{ACCOUNT}:alarm:gpu-xid-cls_a1"


def test_given_a_failed_message_when_delayed_then_its_visibility_timeout_is_changed(stubbed: Any) -> None:
    client, stubber = stubbed("sqs")
    request = {"QueueUrl": QUEUE, "ReceiptHandle": RECEIPT, "VisibilityTimeout": 120}
    stubber.add_response("change_message_visibility", {}, request)
    add_error(client, stubber, ("change_message_visibility", request, {}), "ReceiptHandleIsInvalid")
    add_error(client, stubber, ("change_message_visibility", request, {}), "RequestThrottled")
    visibility = MessageVisibility(client)

    visibility.delay(QUEUE, RECEIPT, 120)
    refused(lambda: visibility.delay(QUEUE, RECEIPT, 120), ProviderError, "ReceiptHandleIsInvalid")
    refused(lambda: visibility.delay(QUEUE, RECEIPT, 120), TransientProviderError, "RequestThrottled")
    stubber.assert_no_pending_responses()


def test_given_a_tagged_alarm_when_its_tags_are_read_then_they_are_a_mapping(stubbed: Any) -> None:
    client, stubber = stubbed("cloudwatch")
    tags = [{"Key": "restarter:cluster", "Value": "cls_a1"}, {"Key": "team", "Value": "research"}]
    stubber.add_response("list_tags_for_resource", {"Tags": tags}, {"ResourceARN": ALARM})

    assert AlarmTags(client).tags(ALARM) == {"restarter:cluster": "cls_a1", "team": "research"}
    assert AlarmTags(client).tags(None) == AlarmTags(client).tags(f"arn:aws:sns:us-east-1:{ACCOUNT}:topic") == {}
    stubber.assert_no_pending_responses()  # neither of the last two asked


@pytest.mark.parametrize("code", ["ResourceNotFoundException", "InvalidParameterValue"])
def test_given_an_alarm_that_is_gone_when_its_tags_are_read_then_it_has_none(stubbed: Any, code: str) -> None:
    client, stubber = stubbed("cloudwatch")
    add_error(client, stubber, ("list_tags_for_resource", {"ResourceARN": ALARM}, {}), code)

    assert AlarmTags(client).tags(ALARM) == {}
    stubber.assert_no_pending_responses()


SERVER_ERRORS = {
    "scheduler:GetSchedule": ("scheduler", "get_schedule", "InternalServerException"),
    "cloudwatch:ListTagsForResource": ("cloudwatch", "list_tags_for_resource", "InternalServiceError"),
}


@pytest.mark.parametrize(("service", "method", "code"), SERVER_ERRORS.values(), ids=SERVER_ERRORS.keys())
def test_given_the_service_fails_internally_when_the_adapter_calls_it_then_it_is_transient(
    stubbed: Any, service: str, method: str, code: str
) -> None:
    client, stubber = stubbed(service)
    add_error(client, stubber, method, code)
    run = {
        "scheduler": lambda: gateway(client).get(GROUP, "nightly"),
        "cloudwatch": lambda: AlarmTags(client).tags(ALARM),
    }[service]

    refused(run, TransientProviderError, code)
