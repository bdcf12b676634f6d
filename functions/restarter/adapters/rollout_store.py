"""DynamoDB persistence for rollout records (table `RolloutsTable`, key `rollout_id`).

Like the restart store: the record is stored whole as JSON in `body`, every write is guarded
by a `version` condition. Per-item results go through `update`, a read-modify-write retried on
a lost race, so concurrent Map items never overwrite each other's results: the record is the
rollout's shared counter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from restarter.adapters.aws_errors import error_code, translated
from restarter.domain.errors import ConflictError, NotFoundError
from restarter.domain.rollouts import RolloutRecord

UPDATE_ATTEMPTS = 8


class RolloutStore:
    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def get(self, rollout_id: str) -> tuple[RolloutRecord, int] | None:
        with translated("dynamodb:GetItem"):
            item = self._client.get_item(
                TableName=self._table, Key={"rollout_id": {"S": rollout_id}}, ConsistentRead=True
            ).get("Item")
        if not item:
            return None
        return RolloutRecord.model_validate_json(item["body"]["S"]), int(item["version"]["N"])

    def put(self, record: RolloutRecord, expected_version: int | None) -> int:
        """Write the record; `expected_version=None` means it must not exist yet."""
        version = (expected_version or 0) + 1
        item = {
            "rollout_id": {"S": record.rollout_id},
            "status": {"S": record.status},
            "version": {"N": str(version)},
            "body": {"S": record.model_dump_json()},
        }
        if expected_version is None:
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(rollout_id)"}
        else:
            condition = {
                "ConditionExpression": "version = :v",
                "ExpressionAttributeValues": {":v": {"N": str(expected_version)}},
            }
        try:
            self._client.put_item(TableName=self._table, Item=item, **condition)
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise ConflictError(
                    "The rollout record changed underneath this update", {"rollout_id": record.rollout_id}
                ) from exc
            with translated("dynamodb:PutItem"):
                raise
        return version

    def update(self, rollout_id: str, change: Callable[[RolloutRecord], None]) -> RolloutRecord:
        """Apply `change` to the newest record and write it back, retrying a lost race."""
        for _ in range(UPDATE_ATTEMPTS):
            stored = self.get(rollout_id)
            if stored is None:
                raise NotFoundError("Rollout not found", {"rollout_id": rollout_id})
            record, version = stored
            change(record)
            try:
                self.put(record, version)
            except ConflictError:
                continue
            return record
        raise ConflictError("The rollout record is too busy to update", {"rollout_id": rollout_id})
