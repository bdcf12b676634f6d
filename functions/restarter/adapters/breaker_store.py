"""DynamoDB persistence of the fleet circuit breaker: one item per tenant in the RecoveryTable.

The item is `cluster_id=breaker#<tenant id>`, `recovered_at=state`, its own partition (no
cluster id starts with `breaker#`, so no cluster's history query meets it), with the
`BreakerState` as JSON in `state` and its `version` as a number. Alarms of several clusters of
a tenant are handled concurrently, and two of them deciding on the same stale state could both
start a recovery past the limit; so a write is conditional on the version it was decided on,
and a caller that loses reads again and decides again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from restarter.adapters.aws_errors import error_code, translated
from restarter.domain.circuit_breaker import BreakerState

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

_PREFIX = "breaker#"
_SORT = "state"


class BreakerStore:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    @property
    def table(self) -> str:
        return self._table

    @staticmethod
    def _key(tenant_id: str) -> dict[str, AttributeValueTypeDef]:
        return {"cluster_id": {"S": f"{_PREFIX}{tenant_id}"}, "recovered_at": {"S": _SORT}}

    def get(self, tenant_id: str) -> BreakerState | None:
        """The tenant's breaker (None: never written), read consistently: it is about to be decided on."""
        with translated("dynamodb:GetItem"):
            item = self._client.get_item(TableName=self._table, Key=self._key(tenant_id), ConsistentRead=True).get(
                "Item"
            )
        if not item:
            return None
        state = BreakerState.model_validate_json(item["state"]["S"])
        return state.model_copy(update={"version": int(item["version"]["N"])})

    def put(self, state: BreakerState, expected_version: int | None) -> bool:
        """Write the state if the stored version is still `expected_version` (None: no item yet).
        False when another writer came first; the stored version becomes expected_version + 1."""
        version = (expected_version or 0) + 1
        body = state.model_copy(update={"version": version}).model_dump_json()
        item: dict[str, AttributeValueTypeDef] = {
            **self._key(state.tenant_id),
            "state": {"S": body},
            "version": {"N": str(version)},
            "tenant_id": {"S": state.tenant_id},
            "breaker_state": {"S": state.state},
        }
        with translated("dynamodb:PutItem"):
            try:
                if expected_version is None:
                    self._client.put_item(
                        TableName=self._table, Item=item, ConditionExpression="attribute_not_exists(cluster_id)"
                    )
                else:
                    self._client.put_item(
                        TableName=self._table,
                        Item=item,
                        ConditionExpression="#version = :expected",
                        ExpressionAttributeNames={"#version": "version"},
                        ExpressionAttributeValues={":expected": {"N": str(expected_version)}},
                    )
            except ClientError as exc:
                if error_code(exc) == "ConditionalCheckFailedException":
                    return False
                raise  # translated: throttling is transient, the rest a ProviderError
        return True
