"""Read-only questions about the account restarter is deployed in, for `GET /v1/diagnostics`:
do the tables and the event bus exist, which rules route events to restarter, and would IAM
let a role do what a restart does (`iam:SimulatePrincipalPolicy`, where the caller may ask)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from restarter.adapters.aws_errors import error_code, translated

NOT_FOUND_CODES = frozenset({"ResourceNotFoundException"})
# the probe may not be allowed to ask, or the endpoint (a local stand-in) may not answer
UNANSWERED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "NotImplemented", "InvalidAction"})


class AccountProbe:
    def __init__(self, dynamodb: Any, events: Any, iam: Any) -> None:
        self._dynamodb = dynamodb
        self._events = events
        self._iam = iam

    def table_status(self, name: str) -> str | None:
        """The table's status (`ACTIVE`, ...), None when it does not exist."""
        try:
            return str(self._dynamodb.describe_table(TableName=name)["Table"]["TableStatus"])
        except ClientError as exc:
            if error_code(exc) in NOT_FOUND_CODES:
                return None
            with translated("dynamodb:DescribeTable"):
                raise

    def event_bus_exists(self, name: str) -> bool:
        try:
            self._events.describe_event_bus(Name=name)
        except ClientError as exc:
            if error_code(exc) in NOT_FOUND_CODES:
                return False
            with translated("events:DescribeEventBus"):
                raise
        return True

    def rule_names(self, bus: str = "default") -> list[str]:
        names: list[str] = []
        kwargs: dict[str, Any] = {"EventBusName": bus}
        while True:
            with translated("events:ListRules"):
                page = self._events.list_rules(**kwargs)
            names += [str(rule["Name"]) for rule in page.get("Rules", [])]
            if not page.get("NextToken"):
                return names
            kwargs["NextToken"] = page["NextToken"]

    def simulate(
        self, role_arn: str, actions: list[str], resource_arns: list[str], context: Mapping[str, str]
    ) -> dict[str, str] | None:
        """action -> IAM's decision (`allowed`, `implicitDeny`, `explicitDeny`); None when IAM did
        not answer (not allowed to ask, or not available)."""
        entries = [
            {"ContextKeyName": key, "ContextKeyValues": [value], "ContextKeyType": "string"}
            for key, value in context.items()
        ]
        try:
            page = self._iam.simulate_principal_policy(
                PolicySourceArn=role_arn, ActionNames=actions, ResourceArns=resource_arns, ContextEntries=entries
            )
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if error_code(exc) in UNANSWERED_CODES or status in (404, 501):
                return None
            with translated("iam:SimulatePrincipalPolicy"):
                raise
        except BotoCoreError:
            return None
        decisions: dict[str, str] = {}
        for result in page.get("EvaluationResults", []):
            action = str(result["EvalActionName"])
            decision = str(result["EvalDecision"])
            # a resource-level answer per ARN: the action is allowed only if every ARN is
            for per_resource in result.get("ResourceSpecificResults", []):
                if per_resource.get("EvalResourceDecision") != "allowed":
                    decision = str(per_resource.get("EvalResourceDecision"))
            decisions[action] = decision
        return decisions
