"""Least privilege, measured: every AWS call the trigger functions make while they run is allowed by
their policies in template.yaml, and nothing more is needed."""

from __future__ import annotations

import re
import threading
from typing import Any

import pytest

from restarter_local.engine import LocalAws
from restarter_local.template import load_template
from tests.conftest import load_event
from tests.integration.harness import WEEKLY, ApiClient, Seed

# ---------------------------------------------------------------- least privilege, measured


# What the SAM policy templates the template uses allow (their documented actions).
SAM_POLICY_ACTIONS = {
    "DynamoDBCrudPolicy": (
        "TableName",
        {
            "dynamodb:GetItem",
            "dynamodb:DeleteItem",
            "dynamodb:PutItem",
            "dynamodb:Scan",
            "dynamodb:Query",
            "dynamodb:UpdateItem",
            "dynamodb:BatchWriteItem",
            "dynamodb:BatchGetItem",
            "dynamodb:DescribeTable",
            "dynamodb:ConditionCheckItem",
        },
    ),
    "DynamoDBReadPolicy": (
        "TableName",
        {"dynamodb:GetItem", "dynamodb:Scan", "dynamodb:Query", "dynamodb:BatchGetItem", "dynamodb:DescribeTable"},
    ),
    "DynamoDBWritePolicy": (
        "TableName",
        {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:BatchWriteItem", "dynamodb:DescribeTable"},
    ),
    "EventBridgePutEventsPolicy": ("EventBusName", {"events:PutEvents"}),
    "SQSSendMessagePolicy": ("QueueName", {"sqs:SendMessage"}),
}
SQS_EVENT_SOURCE_ACTIONS = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}


def _logical_id(reference: Any) -> str | None:
    """`!Ref X`, `!GetAtt X.Arn` / `X.QueueName`: the resource X; a literal or a Sub: None."""
    if isinstance(reference, dict) and "Ref" in reference:
        return str(reference["Ref"])
    if isinstance(reference, dict) and "Fn::GetAtt" in reference:
        target = reference["Fn::GetAtt"]
        return str(target if isinstance(target, str) else ".".join(target)).split(".")[0]
    return None


def _resource_matches(resource: Any, wanted: str) -> bool:
    """`wanted` is a logical id, or `arn-ish:<name>` for resources named by a Sub pattern."""
    if resource == "*":
        return True
    if _logical_id(resource) is not None:
        return _logical_id(resource) == wanted
    pattern = resource.get("Fn::Sub") if isinstance(resource, dict) else resource
    if isinstance(pattern, list):
        pattern = pattern[0]
    regex = re.escape(str(pattern))
    regex = re.sub(r"\\\$\\\{[^}]*\\\}", "[^:]*", regex).replace(r"\*", ".*")
    return re.fullmatch(regex, wanted) is not None


def granted(template: dict[str, Any], function: str, action: str, resource: str) -> bool:
    properties = template["Resources"][function]["Properties"]
    if action in SQS_EVENT_SOURCE_ACTIONS and any(e["Type"] == "SQS" for e in properties.get("Events", {}).values()):
        return True
    for policy in properties.get("Policies", []):
        for name, body in policy.items():
            if name in SAM_POLICY_ACTIONS:
                key, actions = SAM_POLICY_ACTIONS[name]
                if action in actions and _logical_id(body[key]) == resource:
                    return True
            elif name == "Statement":
                for statement in body:
                    actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                    resources = (
                        statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
                    )
                    if action in actions and any(_resource_matches(r, resource) for r in resources):
                        return True
    return False


def _called_resource(aws: LocalAws, service: str, params: dict[str, Any]) -> str:
    """The template resource (logical id) a call touched, or the ARN-ish name it was made on."""
    local = "restarter-local-"
    if service == "events" and params.get("Entries"):
        params = {"EventBusName": params["Entries"][0].get("EventBusName")}
    if service == "sqs" and not str(params.get("QueueUrl", "")).rsplit("/", 1)[-1].startswith(local):
        # a queue named as deployed (the sample events' ARNs): the template queue of that name
        name = str(params.get("QueueUrl", "")).rsplit("/", 1)[-1]
        for logical_id, resource in load_template()["Resources"].items():
            queue_name = resource["Properties"].get("QueueName") if resource["Type"] == "AWS::SQS::Queue" else None
            if queue_name and _resource_matches(queue_name, name):
                return str(logical_id)
    for key in ("TableName", "stateMachineArn", "executionArn", "QueueUrl", "EventBusName"):
        value = str(params.get(key) or "")
        if value:
            if key == "executionArn":  # arn:...:execution:<machine>:<name>
                return value.split(":execution:")[1].split(":")[0].removeprefix(local)
            name = value.rsplit("/", 1)[-1].rsplit(":", 1)[-1]
            return "RestarterEventBus" if name == "restarter-local" else name.removeprefix(local)
    if service == "ssm" and params.get("Name"):
        return f"arn:aws:ssm:us-east-1:123456789012:parameter{params['Name']}"
    if service == "cloudwatch" and params.get("ResourceARN"):
        return str(params["ResourceARN"])
    return "*"


@pytest.fixture
def calls_by_function(aws: LocalAws, monkeypatch: pytest.MonkeyPatch) -> dict[str, set[tuple[str, str]]]:
    """Every AWS call a function's code made while it ran (its Lambda invocations, on any
    thread), as (IAM action, resource) pairs."""
    calls: dict[str, set[tuple[str, str]]] = {}
    current = threading.local()
    invoke, record_call = aws.registry.invoke, aws.agent.record_call

    def invoking(function_name: str, event: Any) -> tuple[Any, bool]:
        current.name = function_name.split(":function:")[-1].split(":")[0]
        try:
            return invoke(function_name, event)
        finally:
            current.name = None

    def recording(service: str, action: str, params: dict[str, Any] | None = None) -> Any:
        name = getattr(current, "name", None)
        if name:
            prefix = "states" if service == "stepfunctions" else service
            calls.setdefault(name, set()).add((f"{prefix}:{action}", _called_resource(aws, service, params or {})))
        return record_call(service, action, params)

    monkeypatch.setattr(aws.registry, "invoke", invoking)
    monkeypatch.setattr(aws.agent, "record_call", recording)
    return calls


def test_given_the_trigger_functions_when_they_run_then_their_template_policies_allow_every_call_they_make(
    api: ApiClient, seed: Seed, aws: LocalAws, calls_by_function: dict[str, set[tuple[str, str]]]
) -> None:
    """ScheduledRolloutFunction once lacked AuditTable although create_rollout audits: each
    trigger function runs its real code here, and every call it made must be allowed."""
    seed(labels={"team": "ml"})  # cluster_abc123
    api.call("POST", "/v1/schedules", WEEKLY)

    # When each trigger delivers its sample events (and the rollouts run their items)
    aws.fire_schedule("weekly-ml-maintenance", "restarter-default")
    aws.wait_for_rollouts()
    aws.registry.invoke("QueueRestartFunction", load_event("sqs_rollout.json"))
    aws.registry.invoke("QueueRestartFunction", load_event("sqs_restart_batch.json"))
    aws.wait_for_rollouts()
    aws.registry.invoke("AlarmRecoveryFunction", load_event("alarm_state_change_cluster_dimension.json"))
    aws.registry.invoke("AlarmRecoveryFunction", load_event("alarm_state_change_instance.json"))  # by tag
    aws.wait_for_executions()

    # Then each made its calls, and template.yaml allows every one of them
    template = load_template()
    trigger_functions = (
        "ScheduledRolloutFunction",
        "QueueRestartFunction",
        "AlarmRecoveryFunction",
        "RolloutStepFunction",
    )
    assert set(trigger_functions) <= set(calls_by_function), sorted(calls_by_function)
    assert ("dynamodb:PutItem", "AuditTable") in calls_by_function["ScheduledRolloutFunction"]
    missing = {
        function: sorted(c for c in calls_by_function[function] if not granted(template, function, *c))
        for function in trigger_functions
    }
    assert missing == {f: [] for f in trigger_functions}
