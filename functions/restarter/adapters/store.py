"""DynamoDB persistence for clusters, restart records, cluster locks and the audit trail.

Records are stored whole as JSON in a `body` attribute beside the key and index attributes:
the models stay the single description of their shape, and writes are guarded by a `version`
condition so two writers never silently overwrite each other.
"""

from __future__ import annotations

import base64
import json
import random
import re
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from botocore.exceptions import ClientError

from restarter.adapters.aws_errors import error_code, translated
from restarter.domain.errors import ConflictError, InvalidStateError, NotFoundError, RequestValidationError
from restarter.domain.models import Cluster, RestartRecord, format_time

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef


class ClusterStore:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    def get(self, cluster_id: str) -> Cluster | None:
        with translated("dynamodb:GetItem"):
            item = self._client.get_item(
                TableName=self._table, Key={"cluster_id": {"S": cluster_id}}, ConsistentRead=True
            ).get("Item")
        return Cluster.model_validate_json(item["body"]["S"]) if item else None

    def put(self, cluster: Cluster) -> None:
        item: dict[str, AttributeValueTypeDef] = {
            "cluster_id": {"S": cluster.id},
            "tenant_id": {"S": cluster.tenant_id},
            "status": {"S": cluster.status},
            "body": {"S": cluster.model_dump_json()},
        }
        with translated("dynamodb:PutItem"):
            self._client.put_item(TableName=self._table, Item=item)

    def list_all(self) -> list[Cluster]:
        clusters: list[Cluster] = []
        kwargs: dict[str, Any] = {"TableName": self._table}
        while True:
            with translated("dynamodb:Scan"):
                page = self._client.scan(**kwargs)
            clusters += [Cluster.model_validate_json(i["body"]["S"]) for i in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return sorted(clusters, key=lambda c: c.id)
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


class VersionedRecords:
    """A table of whole-JSON records, each write guarded by a `version` condition.

    `key` names the partition key; `index` gives the extra attributes a record is queried by.
    """

    def __init__(self, client: DynamoDBClient, table: str, key: str, kind: str) -> None:
        self._client = client
        self._table = table
        self._key = key
        self._kind = kind

    def get(self, record_id: str) -> tuple[str, int] | None:
        """The record's JSON body and its version."""
        with translated("dynamodb:GetItem"):
            item = self._client.get_item(
                TableName=self._table, Key={self._key: {"S": record_id}}, ConsistentRead=True
            ).get("Item")
        if not item:
            return None
        return item["body"]["S"], int(item["version"]["N"])

    def put(self, record_id: str, body: str, index: Mapping[str, str], expected_version: int | None) -> int:
        """Write; `expected_version=None` means it must not exist yet. A lost race is a ConflictError."""
        version = (expected_version or 0) + 1
        item = {
            self._key: {"S": record_id},
            **{name: {"S": value} for name, value in index.items()},
            "version": {"N": str(version)},
            "body": {"S": body},
        }
        if expected_version is None:
            condition: dict[str, Any] = {"ConditionExpression": f"attribute_not_exists({self._key})"}
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
                    f"The {self._kind} record changed underneath this update", {f"{self._kind}_id": record_id}
                ) from exc
            with translated("dynamodb:PutItem"):
                raise
        return version


RecordT = TypeVar("RecordT")
UPDATE_ATTEMPTS = 12
UPDATE_BACKOFF_SECONDS = 0.01
UPDATE_BACKOFF_CAP_SECONDS = 0.5


class GuardedStore(Protocol[RecordT]):
    def get(self, record_id: str, /) -> tuple[RecordT, int] | None: ...
    def put(self, record: RecordT, expected_version: int | None, /) -> int: ...


def update_record(
    store: GuardedStore[RecordT], record_id: str, kind: str, change: Callable[[RecordT], None]
) -> RecordT:
    """Apply `change` to the newest record and write it back, retrying a lost race.

    Step Functions writes restart and rollout records at every step; a writer beside it
    (a cancel, an intake recording its execution) must re-read and re-apply, not give up.
    `change` may raise to refuse the update; it sees a fresh record on every attempt.
    """
    for attempt in range(UPDATE_ATTEMPTS):
        if attempt:  # many writers (a rollout's parallel items): spread the retries out
            time.sleep(random.uniform(0, min(UPDATE_BACKOFF_CAP_SECONDS, UPDATE_BACKOFF_SECONDS * 2**attempt)))
        stored = store.get(record_id)
        if stored is None:
            raise NotFoundError(f"{kind.capitalize()} not found", {f"{kind}_id": record_id})
        record, version = stored
        change(record)
        try:
            store.put(record, version)
        except ConflictError:
            continue
        return record
    raise ConflictError(f"The {kind} record is too busy to update", {f"{kind}_id": record_id})


class RestartStore:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table
        self._records = VersionedRecords(client, table, "restart_id", "restart")

    def get(self, restart_id: str) -> tuple[RestartRecord, int] | None:
        """The record and its version (for a guarded write back)."""
        stored = self._records.get(restart_id)
        if stored is None:
            return None
        return RestartRecord.model_validate_json(stored[0]), stored[1]

    def put(self, record: RestartRecord, expected_version: int | None) -> int:
        """Write the record; `expected_version=None` means it must not exist yet."""
        index = {
            "cluster_id": record.cluster_id,
            "restart_initiated_at": record.restart_initiated_at,
            "status": record.status,
        }
        return self._records.put(record.id, record.model_dump_json(), index, expected_version)

    def update(self, restart_id: str, change: Callable[[RestartRecord], None]) -> RestartRecord:
        return update_record(self, restart_id, "restart", change)

    def list_for_cluster(
        self, cluster_id: str, limit: int = 20, cursor: str | None = None
    ) -> tuple[list[RestartRecord], str | None]:
        """Newest first; `cursor` is the opaque token of the previous page."""
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": "by_cluster",
            "KeyConditionExpression": "cluster_id = :c",
            "ExpressionAttributeValues": {":c": {"S": cluster_id}},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if cursor:
            kwargs["ExclusiveStartKey"] = _decode_cursor(cursor, cluster_id)
        with translated("dynamodb:Query"):
            page = self._client.query(**kwargs)
        records = [RestartRecord.model_validate_json(i["body"]["S"]) for i in page.get("Items", [])]
        last = page.get("LastEvaluatedKey")
        return records, (_encode_cursor(last) if last else None)


# A page token is the query's LastEvaluatedKey, base64url JSON. It is not signed: it is checked
# strictly instead (exact keys and types, this cluster's index only), so a forged or garbled
# token is a 400 naming `next_token` and never reaches DynamoDB as a malformed start key.
_CURSOR_ATTRIBUTES = ("cluster_id", "restart_id", "restart_initiated_at")
_CURSOR_RESTART_ID = re.compile(r"rst_[a-z0-9]{1,64}")
_CURSOR_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_CURSOR_MAX_CHARS = 2048


def _encode_cursor(key: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, sort_keys=True).encode()).decode()


def _decode_cursor(cursor: str, cluster_id: str) -> dict[str, Any]:
    """The start key a token stands for; `RequestValidationError` for anything we did not issue
    for this cluster's history."""
    invalid = RequestValidationError(
        "Invalid pagination token",
        {"errors": [{"field": "next_token", "message": "not a token issued for this list", "type": "value_error"}]},
    )
    if len(cursor) > _CURSOR_MAX_CHARS:
        raise invalid
    try:
        key = json.loads(base64.b64decode(cursor.encode("ascii"), altchars=b"-_", validate=True))
    except (ValueError, TypeError, RecursionError) as exc:  # binascii and Unicode errors are ValueErrors
        raise invalid from exc
    if not isinstance(key, dict) or sorted(key) != sorted(_CURSOR_ATTRIBUTES):
        raise invalid
    values: dict[str, str] = {}
    for name in _CURSOR_ATTRIBUTES:
        attribute = key[name]
        if not isinstance(attribute, dict) or list(attribute) != ["S"] or not isinstance(attribute["S"], str):
            raise invalid
        values[name] = attribute["S"]
    if (
        values["cluster_id"] != cluster_id
        or not _CURSOR_RESTART_ID.fullmatch(values["restart_id"])
        or not _CURSOR_TIME.fullmatch(values["restart_initiated_at"])
    ):
        raise invalid
    return {name: {"S": values[name]} for name in _CURSOR_ATTRIBUTES}


class ClusterLock:
    """One restart at a time per cluster. A lock expires; a restart whose execution ended without
    cleaning up is finished (lock released) by services/ended_executions.py, or by a cancel."""

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    @staticmethod
    def _key(cluster_id: str) -> dict[str, Any]:
        return {"lock_id": {"S": f"cluster#{cluster_id}"}}

    def acquire(self, cluster_id: str, owner: str, now: datetime, expires_at: datetime) -> None:
        item = {
            **self._key(cluster_id),
            "owner": {"S": owner},
            "acquired_at": {"S": format_time(now)},
            "expires_at": {"S": format_time(expires_at)},
            "expires_at_epoch": {"N": str(int(expires_at.timestamp()))},
        }
        try:
            self._client.put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression="attribute_not_exists(lock_id) OR expires_at_epoch < :now",
                ExpressionAttributeValues={":now": {"N": str(int(now.timestamp()))}},
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                with translated("dynamodb:PutItem"):
                    raise
            holder = self.holder(cluster_id)
            raise InvalidStateError(
                "Cluster cannot be restarted in current state",
                {
                    "current_status": "restarting",
                    "allowed_states": ["running", "stopped", "error"],
                    "suggestion": "Wait for the restart in progress to finish, or cancel it",
                    "restart_id": holder,
                },
            ) from exc

    def release(self, cluster_id: str, owner: str) -> bool:
        """Release if `owner` holds it. Returns False when someone else (or nobody) holds it."""
        try:
            self._client.delete_item(
                TableName=self._table,
                Key=self._key(cluster_id),
                ConditionExpression="#o = :owner",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={":owner": {"S": owner}},
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            with translated("dynamodb:DeleteItem"):
                raise
        return True

    def holder(self, cluster_id: str) -> str | None:
        with translated("dynamodb:GetItem"):
            item = self._client.get_item(TableName=self._table, Key=self._key(cluster_id), ConsistentRead=True).get(
                "Item"
            )
        return item["owner"]["S"] if item else None


class AuditLog:
    """Who asked for what, why, what changed and how it ended. Callers pass redacted data only."""

    RETENTION_DAYS = 400

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    def record(self, entity_id: str, action: str, actor: str, outcome: str, now: datetime, **details: Any) -> None:
        recorded_at = f"{format_time(now)}#{uuid.uuid4().hex[:8]}"
        item = {
            "entity_id": {"S": entity_id},
            "recorded_at": {"S": recorded_at},
            "action": {"S": action},
            "actor": {"S": actor},
            "outcome": {"S": outcome},
            "details": {"S": json.dumps(details, default=str, sort_keys=True)},
            "expires_at_epoch": {"N": str(int(now.timestamp()) + self.RETENTION_DAYS * 86400)},
        }
        with translated("dynamodb:PutItem"):
            self._client.put_item(TableName=self._table, Item=item)

    def entries(self, entity_id: str) -> list[dict[str, Any]]:
        with translated("dynamodb:Query"):
            page = self._client.query(
                TableName=self._table,
                KeyConditionExpression="entity_id = :e",
                ExpressionAttributeValues={":e": {"S": entity_id}},
            )
        return [
            {
                "recorded_at": i["recorded_at"]["S"],
                "action": i["action"]["S"],
                "actor": i["actor"]["S"],
                "outcome": i["outcome"]["S"],
                "details": json.loads(i["details"]["S"]),
            }
            for i in page.get("Items", [])
        ]
