"""DynamoDB persistence of alarm recoveries: each cluster's recovery history, and the alarm
events already handled (so that an event delivered twice recovers once).

Table (`RecoveryTable`): key `cluster_id` (S) + `recovered_at` (S), TTL `expires_at_epoch`.
A history item is `cluster_id=<cluster id>`, `recovered_at=<UTC time>#<event id>`; a claimed
event is `cluster_id=event#<event id>`, `recovered_at=claimed`, in its own partition, with
`claim_state` `in_progress` (and `lease_until`) while an invocation handles it, then `done`.
An in-progress claim whose lease has passed (the invocation died between claiming the event and
finishing) may be claimed again; a done one never. A claim without `claim_state` (written
before the two states) counts as done.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from restarter.adapters.aws_errors import error_code, translated
from restarter.domain.models import format_time, parse_time
from restarter.domain.recovery import RecoveryEntry

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef


HISTORY_RETENTION = timedelta(days=30)
CLAIM_RETENTION = timedelta(days=7)
_CLAIMED = "claimed"
IN_PROGRESS = "in_progress"
DONE = "done"


class RecoveryStore:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    @property
    def table(self) -> str:
        return self._table

    # -------------------------------------------------------------- idempotency of alarm events
    @staticmethod
    def _claim_key(event_id: str) -> dict[str, Any]:
        return {"cluster_id": {"S": f"event#{event_id}"}, "recovered_at": {"S": _CLAIMED}}

    def claim_event(
        self,
        event_id: str,
        now: datetime,
        lease: timedelta,
        *,
        cluster_id: str | None = None,
        alarm_name: str | None = None,
    ) -> str | None:
        """Claim the event for `lease`: None if this call now holds it (first, or after an
        in-progress claim whose lease ran out); else the state of the claim that stands,
        `in_progress` (another invocation is on it) or `done`."""
        item: dict[str, Any] = {
            "claimed_at": {"S": format_time(now)},
            "claim_state": {"S": IN_PROGRESS},
            "lease_until": {"S": format_time(now + lease)},
            "expires_at_epoch": {"N": str(int((now + CLAIM_RETENTION).timestamp()))},
            **({"for_cluster_id": {"S": cluster_id}} if cluster_id else {}),
            **({"alarm_name": {"S": alarm_name}} if alarm_name else {}),
            **self._claim_key(event_id),
        }
        try:
            self._client.put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression="attribute_not_exists(cluster_id) OR (#state = :in_progress AND #lease < :now)",
                ExpressionAttributeNames={"#state": "claim_state", "#lease": "lease_until"},
                ExpressionAttributeValues={":in_progress": {"S": IN_PROGRESS}, ":now": {"S": format_time(now)}},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                standing: Any = exc.response.get("Item") or {}  # ReturnValuesOnConditionCheckFailure
                return str(standing.get("claim_state", {}).get("S") or DONE)
            with translated("dynamodb:PutItem"):
                raise
        return None

    def finish_event(self, event_id: str, now: datetime) -> None:
        """The event is handled: every later delivery is a duplicate."""
        item: dict[str, Any] = {
            **self._claim_key(event_id),
            "claim_state": {"S": DONE},
            "done_at": {"S": format_time(now)},
            "expires_at_epoch": {"N": str(int((now + CLAIM_RETENTION).timestamp()))},
        }
        with translated("dynamodb:PutItem"):
            self._client.put_item(TableName=self._table, Item=item)

    def release_event(self, event_id: str) -> None:
        """Forget a claim, so that a redelivery of an event we could not handle is handled."""
        with translated("dynamodb:DeleteItem"):
            self._client.delete_item(TableName=self._table, Key=self._claim_key(event_id))

    # -------------------------------------------------------------- history
    def record(self, entry: RecoveryEntry) -> None:
        recovered = parse_time(entry.recovered_at)
        item: dict[str, AttributeValueTypeDef] = {
            "cluster_id": {"S": entry.cluster_id},
            "recovered_at": {"S": f"{entry.recovered_at}#{entry.event_id}"},
            "alarm_name": {"S": entry.alarm_name},
            "strategy": {"S": entry.strategy},
            "restart_id": {"S": entry.restart_id},
            "event_id": {"S": entry.event_id},
            "body": {"S": entry.model_dump_json()},
            "expires_at_epoch": {"N": str(int((recovered + HISTORY_RETENTION).timestamp()))},
        }
        with translated("dynamodb:PutItem"):
            self._client.put_item(TableName=self._table, Item=item)

    def history(self, cluster_id: str, since: datetime) -> list[RecoveryEntry]:
        """The cluster's recoveries since `since`, oldest first."""
        entries: list[RecoveryEntry] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "cluster_id = :c AND recovered_at >= :since",
            "ExpressionAttributeValues": {":c": {"S": cluster_id}, ":since": {"S": format_time(since)}},
            "ConsistentRead": True,
        }
        while True:
            with translated("dynamodb:Query"):
                page = self._client.query(**kwargs)
            entries += [RecoveryEntry.model_validate_json(i["body"]["S"]) for i in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return entries
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
