"""DynamoDB persistence of health reports: the last report of every instance of a cluster, and
the on-demand check that is still running.

Table (`HealthTable`): key `cluster_id` (S) + `instance_id` (S). A report is
`instance_id=<instance id>` with the report as JSON in `report`; the running check is
`instance_id=#check`. Reports are overwritten by the next one (history lives in the audit log and
the restart records); each expires 30 days after it was taken (`expires_at_epoch`), so a cluster
that is gone leaves nothing behind.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from restarter.adapters.aws_errors import error_code, translated
from restarter.domain.gpu.records import NodeHealthRecord, PendingHealthCheck
from restarter.domain.models import parse_time

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

RETENTION = timedelta(days=30)
_CHECK = "#check"


class HealthReportStore:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    def put_report(self, record: NodeHealthRecord) -> None:
        expires = int((parse_time(record.taken_at) + RETENTION).timestamp())
        with translated("dynamodb:PutItem"):
            self._client.put_item(
                TableName=self._table,
                Item={
                    "cluster_id": {"S": record.cluster_id},
                    "instance_id": {"S": record.instance_id},
                    "report": {"S": record.model_dump_json(exclude_none=True)},
                    "expires_at_epoch": {"N": str(expires)},
                },
            )

    def reports(self, cluster_id: str) -> list[NodeHealthRecord]:
        return [
            NodeHealthRecord.model_validate_json(i["report"]["S"]) for i in self._items(cluster_id) if _is_report(i)
        ]

    def report(self, cluster_id: str, instance_id: str) -> NodeHealthRecord | None:
        with translated("dynamodb:GetItem"):
            item = self._client.get_item(
                TableName=self._table,
                Key={"cluster_id": {"S": cluster_id}, "instance_id": {"S": instance_id}},
                ConsistentRead=True,
            ).get("Item")
        return NodeHealthRecord.model_validate_json(item["report"]["S"]) if item else None

    # ------------------------------------------------------------ the running on-demand check
    def put_pending(self, check: PendingHealthCheck) -> bool:
        """Record the running check; False when another one is already running."""
        expires = int((parse_time(check.started_at) + RETENTION).timestamp())
        try:
            self._client.put_item(
                TableName=self._table,
                Item={
                    "cluster_id": {"S": check.cluster_id},
                    "instance_id": {"S": _CHECK},
                    "check_id": {"S": check.check_id},
                    "check": {"S": check.model_dump_json()},
                    "expires_at_epoch": {"N": str(expires)},
                },
                ConditionExpression="attribute_not_exists(cluster_id)",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            with translated("dynamodb:PutItem"):
                raise
        return True

    def pending(self, cluster_id: str) -> PendingHealthCheck | None:
        with translated("dynamodb:GetItem"):
            item = self._client.get_item(
                TableName=self._table,
                Key={"cluster_id": {"S": cluster_id}, "instance_id": {"S": _CHECK}},
                ConsistentRead=True,
            ).get("Item")
        return PendingHealthCheck.model_validate_json(item["check"]["S"]) if item else None

    def clear_pending(self, cluster_id: str, check_id: str) -> None:
        """Remove the running check if it is still `check_id` (another reader may have collected it)."""
        try:
            self._client.delete_item(
                TableName=self._table,
                Key={"cluster_id": {"S": cluster_id}, "instance_id": {"S": _CHECK}},
                ConditionExpression="check_id = :id",
                ExpressionAttributeValues={":id": {"S": check_id}},
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                with translated("dynamodb:DeleteItem"):
                    raise

    def _items(self, cluster_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "cluster_id = :c",
            "ExpressionAttributeValues": {":c": {"S": cluster_id}},
            "ConsistentRead": True,
        }
        while True:
            with translated("dynamodb:Query"):
                page = self._client.query(**kwargs)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _is_report(item: dict[str, Any]) -> bool:
    return item["instance_id"]["S"] != _CHECK and "report" in item
