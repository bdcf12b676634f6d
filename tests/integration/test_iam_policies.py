"""What template.yaml's policies allow, evaluated like IAM does for one request: the action, the
resource's ARN (or the template resource it names) and the condition keys (the resource's tags,
`ec2:CreateAction`, `iam:PassedToService`). A request that no statement allows is refused, so a
narrower policy than the code needs fails the permission tests instead of a deployment.

The tests here keep the evaluator honest: each shows a request that a statement must refuse."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any

from restarter_local.account import ACCOUNT, REGION
from restarter_local.template import load_template

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
# What SAM's AWSLambdaSQSQueueExecutionRole gives a function with an SQS event source.
SQS_EVENT_SOURCE_ACTIONS = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}
PSEUDO_PARAMETERS = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT}
TAG_KEY = "restarter:cluster"


@dataclass(frozen=True)
class Request:
    """One IAM authorization: `resource` is a template logical id (a table, a queue, a state
    machine, a role), an ARN, or "*" for actions that name no resource."""

    action: str
    resource: str
    tags: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    context: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    def key(self) -> tuple[str, str, tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
        return (self.action, self.resource, tuple(sorted(self.tags.items())), tuple(sorted(self.context.items())))


def _logical_id(reference: Any) -> str | None:
    """`!Ref X`, `!GetAtt X.Arn` / `X.QueueName`: the resource X; a literal or a Sub: None."""
    if isinstance(reference, dict) and "Ref" in reference:
        return str(reference["Ref"])
    if isinstance(reference, dict) and "Fn::GetAtt" in reference:
        target = reference["Fn::GetAtt"]
        return str(target if isinstance(target, str) else ".".join(target)).split(".")[0]
    return None


def _pattern_regex(pattern: str, resources: dict[str, Any]) -> str:
    """An ARN pattern as a regex: pseudo parameters as deployed here, `${X}`/`${X.Name}` of a
    template resource as `<X>` (how requests name it), a parameter as any segment, `*` anything."""
    out, pos = [], 0
    for match in re.finditer(r"\$\{([^}]*)\}", pattern):
        out.append(".*".join(re.escape(part) for part in pattern[pos : match.start()].split("*")))
        name = match.group(1)
        if name in PSEUDO_PARAMETERS:
            out.append(re.escape(PSEUDO_PARAMETERS[name]))
        elif name.split(".")[0] in resources:
            out.append(re.escape(f"<{name.split('.')[0]}>"))
        else:
            out.append("[^:/]*")
        pos = match.end()
    out.append(".*".join(re.escape(part) for part in pattern[pos:].split("*")))
    return "".join(out)


def resource_matches(resource: Any, wanted: str, resources: dict[str, Any] | None = None) -> bool:
    if resource == "*":
        return True
    if _logical_id(resource) is not None:
        return _logical_id(resource) == wanted
    pattern = resource.get("Fn::Sub") if isinstance(resource, dict) else resource
    if isinstance(pattern, list):
        pattern = pattern[0]
    regex = _pattern_regex(str(pattern), resources if resources is not None else load_template()["Resources"])
    return re.fullmatch(regex, wanted) is not None


def _condition_holds(condition: dict[str, Any], request: Request) -> bool:
    """Every operator and key must hold; a key the request lacks fails (no ...IfExists here)."""
    for operator, tests in condition.items():
        for key, expected in tests.items():
            if key.startswith("aws:ResourceTag/"):
                actual = request.tags.get(key.removeprefix("aws:ResourceTag/"))
            else:
                actual = request.context.get(key)
            values = expected if isinstance(expected, list) else [expected]
            if actual is None:
                return False
            if operator == "StringEquals":
                ok = actual in values
            elif operator == "StringLike":
                ok = any(fnmatch.fnmatchcase(actual, str(v)) for v in values)
            else:
                raise AssertionError(f"condition operator {operator} is not modelled: extend the evaluator")
            if not ok:
                return False
    return True


def statement_allows(statement: dict[str, Any], request: Request, resources: dict[str, Any] | None = None) -> bool:
    if statement.get("Effect") != "Allow":
        return False
    actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
    if not any(fnmatch.fnmatchcase(request.action, a) for a in actions):
        return False
    targets = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
    if not any(resource_matches(r, request.resource, resources) for r in targets):
        return False
    return _condition_holds(statement.get("Condition", {}), request)


def granted(template: dict[str, Any], function: str, request: Request) -> bool:
    properties = template["Resources"][function]["Properties"]
    if request.action in SQS_EVENT_SOURCE_ACTIONS and any(
        e["Type"] == "SQS" for e in properties.get("Events", {}).values()
    ):
        return True
    for policy in properties.get("Policies", []):
        for name, body in policy.items():
            if name in SAM_POLICY_ACTIONS:
                key, actions = SAM_POLICY_ACTIONS[name]
                if request.action in actions and _logical_id(body[key]) == request.resource:
                    return True
            elif name == "Statement" and any(statement_allows(s, request, template["Resources"]) for s in body):
                return True
    return False


def statements(template: dict[str, Any], function: str) -> dict[str, dict[str, Any]]:
    """A function's own statements by Sid."""
    found = {}
    for policy in template["Resources"][function]["Properties"].get("Policies", []):
        for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
            found[statement["Sid"]] = statement
    return found


# ---------------------------------------------------------------- the evaluator refuses what IAM refuses

INSTANCE = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0123456789abcdef0"


def test_given_an_untagged_instance_when_rebooted_then_the_tag_conditioned_statement_refuses() -> None:
    template = load_template()
    assert granted(template, "RestartStepFunction", Request("ec2:RebootInstances", INSTANCE, {TAG_KEY: "c1"}))
    assert not granted(template, "RestartStepFunction", Request("ec2:RebootInstances", INSTANCE))
    assert not granted(template, "RestartStepFunction", Request("ec2:RebootInstances", INSTANCE, {"team": "ml"}))


def test_given_an_instance_of_another_account_when_rebooted_then_the_statement_refuses() -> None:
    other = INSTANCE.replace(ACCOUNT, "999999999999")
    assert not granted(load_template(), "RestartStepFunction", Request("ec2:RebootInstances", other, {TAG_KEY: "c"}))


def test_given_a_document_other_than_the_two_when_sent_then_refused() -> None:
    template = load_template()
    shell = f"arn:aws:ssm:{REGION}::document/AWS-RunShellScript"
    assert granted(template, "RestartStepFunction", Request("ssm:SendCommand", shell))
    assert not granted(template, "RestartStepFunction", Request("ssm:SendCommand", shell.replace("Shell", "Power")))
    patch = f"arn:aws:ssm:{REGION}::document/AWS-RunPatchBaseline"
    assert not granted(template, "ApiFunction", Request("ssm:SendCommand", patch))


def test_given_a_state_machine_when_another_ones_execution_is_read_then_refused() -> None:
    template = load_template()
    execution = f"arn:aws:states:{REGION}:{ACCOUNT}:execution:<RolloutStateMachine>:r1"
    assert granted(template, "ApiFunction", Request("states:DescribeExecution", execution))
    other = execution.replace("<RolloutStateMachine>", "<SomeOtherMachine>")
    assert not granted(template, "ApiFunction", Request("states:DescribeExecution", other))
    assert not granted(template, "ApiFunction", Request("states:StartExecution", "SomeOtherMachine"))


def test_given_tags_on_an_existing_snapshot_when_not_at_creation_then_refused() -> None:
    template = load_template()
    snapshot = f"arn:aws:ec2:{REGION}::snapshot/snap-0123"
    at_creation = Request("ec2:CreateTags", snapshot, context={"ec2:CreateAction": "CreateSnapshots"})
    assert granted(template, "RestartStepFunction", at_creation)
    assert not granted(template, "RestartStepFunction", Request("ec2:CreateTags", snapshot))


def test_given_a_snapshot_created_without_the_cluster_tag_then_refused() -> None:
    template = load_template()
    snapshots = f"arn:aws:ec2:{REGION}::snapshot/*"
    tagged = Request("ec2:CreateSnapshots", snapshots, context={f"aws:RequestTag/{TAG_KEY}": "c1"})
    assert granted(template, "RestartStepFunction", tagged)
    assert not granted(template, "RestartStepFunction", Request("ec2:CreateSnapshots", snapshots))


def test_given_the_scheduler_role_when_passed_to_another_service_then_refused() -> None:
    template = load_template()
    to_scheduler = Request("iam:PassRole", "SchedulerRole", context={"iam:PassedToService": "scheduler.amazonaws.com"})
    assert granted(template, "ApiFunction", to_scheduler)
    to_ec2 = Request("iam:PassRole", "SchedulerRole", context={"iam:PassedToService": "ec2.amazonaws.com"})
    assert not granted(template, "ApiFunction", to_ec2)


def test_given_an_unknown_condition_operator_then_the_evaluator_fails_rather_than_allow() -> None:
    statement = {
        "Effect": "Allow",
        "Action": "ec2:StopInstances",
        "Resource": "*",
        "Condition": {"ForAnyValue:StringLike": {"aws:TagKeys": "*"}},
    }
    try:
        statement_allows(statement, Request("ec2:StopInstances", INSTANCE, context={"aws:TagKeys": "x"}), {})
    except AssertionError as exc:
        assert "not modelled" in str(exc)
    else:
        raise AssertionError("an unmodelled operator was evaluated")


def test_every_star_resource_statement_of_the_template_is_only_for_actions_aws_does_not_scope() -> None:
    """Describe and list calls, Run Command results and log delivery support no resource ARN
    (Service Authorization Reference); anything else must name its resources."""
    unscoped = re.compile(
        r"^(ec2:Describe\w+|ssm:DescribeInstanceInformation|ssm:GetCommandInvocation|ssm:ListCommandInvocations"
        r"|scheduler:ListSchedules|logs:(Create|Get|Update|Delete|List)LogDeliver(y|ies)|logs:PutResourcePolicy"
        r"|logs:DescribeResourcePolicies|logs:DescribeLogGroups|xray:\w+)$"
    )
    template = load_template()
    star = []
    for logical_id, resource in template["Resources"].items():
        for policy in resource.get("Properties", {}).get("Policies", []) or []:
            for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
                if statement.get("Resource") == "*":
                    actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                    star += [(logical_id, statement["Sid"], a) for a in actions]
    assert star, "no statement with Resource '*' found: the template was not read"
    assert [s for s in star if not unscoped.match(s[2])] == []
