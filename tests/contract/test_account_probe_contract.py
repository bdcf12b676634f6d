"""The diagnostics' account probe against the real service models (botocore Stubber): what it
sends to IAM, DynamoDB and EventBridge, and how it reads their answers and refusals."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from botocore.stub import Stubber

from restarter.adapters.account_probe import AccountProbe

ROLE = "arn:aws:iam::123456789012:role/restarter-RestartStepFunctionRole-AbC123"
INSTANCE = "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0"


@pytest.fixture
def stubs(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[AccountProbe, Stubber, Stubber, Stubber]]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    events = boto3.client("events", region_name="us-east-1")
    iam = boto3.client("iam", region_name="us-east-1")
    with Stubber(dynamodb) as d, Stubber(events) as e, Stubber(iam) as i:
        yield AccountProbe(dynamodb, events, iam), d, e, i
        d.assert_no_pending_responses()
        e.assert_no_pending_responses()
        i.assert_no_pending_responses()


def test_a_missing_table_is_none_and_an_active_one_its_status(
    stubs: tuple[AccountProbe, Stubber, Stubber, Stubber],
) -> None:
    probe, dynamodb, _, _ = stubs
    dynamodb.add_client_error("describe_table", "ResourceNotFoundException", "Requested resource not found", 400)
    dynamodb.add_response(
        "describe_table",
        {"Table": {"TableName": "restarter-health", "TableStatus": "ACTIVE"}},
        {"TableName": "restarter-health"},
    )

    assert probe.table_status("restarter-clusters") is None
    assert probe.table_status("restarter-health") == "ACTIVE"


def test_the_rules_of_the_default_bus_are_read_page_by_page(
    stubs: tuple[AccountProbe, Stubber, Stubber, Stubber],
) -> None:
    probe, _, events, _ = stubs
    events.add_response(
        "list_rules",
        {"Rules": [{"Name": "restarter-AlarmRecoveryFunctionAlarm-1A2B"}], "NextToken": "t1"},
        {"EventBusName": "default"},
    )
    events.add_response(
        "list_rules",
        {"Rules": [{"Name": "restarter-RestartExecutionEndedFunctionEnded-3C4D"}]},
        {"EventBusName": "default", "NextToken": "t1"},
    )

    assert probe.rule_names() == [
        "restarter-AlarmRecoveryFunctionAlarm-1A2B",
        "restarter-RestartExecutionEndedFunctionEnded-3C4D",
    ]


def test_a_simulation_names_each_action_and_a_resource_level_deny_wins(
    stubs: tuple[AccountProbe, Stubber, Stubber, Stubber],
) -> None:
    probe, _, _, iam = stubs
    iam.add_response(
        "simulate_principal_policy",
        {
            "EvaluationResults": [
                {"EvalActionName": "ec2:RebootInstances", "EvalDecision": "allowed"},
                {
                    "EvalActionName": "ec2:StopInstances",
                    "EvalDecision": "allowed",
                    "ResourceSpecificResults": [{"EvalResourceName": INSTANCE, "EvalResourceDecision": "implicitDeny"}],
                },
            ]
        },
        {
            "PolicySourceArn": ROLE,
            "ActionNames": ["ec2:RebootInstances", "ec2:StopInstances"],
            "ResourceArns": [INSTANCE],
            "ContextEntries": [
                {
                    "ContextKeyName": "aws:ResourceTag/restarter:cluster",
                    "ContextKeyValues": ["c1"],
                    "ContextKeyType": "string",
                }
            ],
        },
    )

    decisions = probe.simulate(
        ROLE, ["ec2:RebootInstances", "ec2:StopInstances"], [INSTANCE], {"aws:ResourceTag/restarter:cluster": "c1"}
    )

    assert decisions == {"ec2:RebootInstances": "allowed", "ec2:StopInstances": "implicitDeny"}


def test_a_caller_not_allowed_to_simulate_gets_no_answer_not_an_error(
    stubs: tuple[AccountProbe, Stubber, Stubber, Stubber],
) -> None:
    probe, _, _, iam = stubs
    iam.add_client_error(
        "simulate_principal_policy", "AccessDenied", "not authorized to perform iam:SimulatePrincipalPolicy", 403
    )

    assert probe.simulate(ROLE, ["ec2:RebootInstances"], [INSTANCE], {}) is None
