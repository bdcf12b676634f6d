"""DynamoDB store of the REST API's keys, hashed.

One item per key, keyed by `key_hash` (see `restarter.domain.auth.hash_key`): the plaintext key
leaves `create_key` once, to its caller, and is never written anywhere. Item attributes:
`key_hash` (S), `key_id` (S), `tenant_id` (S), `scopes` (SS), `name` (S, optional),
`created_at` (S), `disabled` (BOOL), `disabled_at` (S, once disabled).

Finding a key by its `key_id` (to disable it, or to keep ids unique on creation) is a Scan with
a filter: fine at the scale of API keys (tens to thousands of items, admin operations only).
Should that change, add a `by_key_id` GSI to the table and make `_hashes_for_key_id` a Query.
The authorizer's hot path is one GetItem by hash.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from pydantic import ValidationError

from restarter.adapters.aws_errors import error_code, translated
from restarter.adapters.clock import SystemClock
from restarter.domain.auth import Principal, build_principal, hash_key, new_key, split_key
from restarter.domain.errors import ConflictError, ProviderError, RequestValidationError
from restarter.domain.models import format_time

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


_NEW_KEY_ATTEMPTS = 5


class ApiKeyStore:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    def create_key(
        self, tenant_id: str, scopes: Iterable[str], name: str | None = None, *, now: datetime
    ) -> tuple[str, Principal]:
        """Make a key for `tenant_id`. Returns the plaintext key (its only appearance) and its principal."""
        scopes = frozenset(scopes)
        for _ in range(_NEW_KEY_ATTEMPTS):
            key = new_key()
            parts = split_key(key)
            assert parts is not None  # new_key makes well-formed keys
            key_id = parts[0]
            principal = build_principal(key_id, tenant_id, scopes, name)
            if self._hashes_for_key_id(key_id):
                continue  # 32-bit ids can collide; key_id must name one key
            try:
                self._put(key, principal, now, must_be_new=True)
            except ConflictError:
                continue
            return key, principal
        raise ConflictError("Could not allocate a unique API key id", {"tenant_id": tenant_id})

    def put_known_key(
        self,
        key: str,
        tenant_id: str,
        scopes: Iterable[str],
        name: str | None = None,
        *,
        now: datetime | None = None,
    ) -> Principal:
        """Store a fixed key (local and dev seeding). Idempotent: writing it again replaces it, enabled."""
        parts = split_key(key)
        if parts is None:
            raise RequestValidationError("Malformed API key: expected rk_<8 hex>_<32+ url-safe characters>")
        principal = build_principal(parts[0], tenant_id, scopes, name)
        key_hash = hash_key(key)
        if any(other != key_hash for other in self._hashes_for_key_id(principal.key_id)):
            raise ConflictError("Another API key already uses this key id", {"key_id": principal.key_id})
        self._put(key, principal, now or SystemClock().now(), must_be_new=False)
        return principal

    def lookup(self, key: str) -> Principal | None:
        """The principal of an enabled key; None for a malformed, unknown or disabled key."""
        parts = split_key(key)
        if parts is None:
            return None
        with translated("dynamodb:GetItem"):
            item = self._client.get_item(TableName=self._table, Key={"key_hash": {"S": hash_key(key)}}).get("Item")
        # Fail closed: only an item that says `disabled = false` is honoured.
        if not item or item.get("disabled") != {"BOOL": False}:
            return None
        principal = _principal(item, parts[0])
        return principal if principal.key_id == parts[0] else None

    def disable(self, key_id: str, *, now: datetime | None = None) -> bool:
        """Disable the key named `key_id`. False if there is no such key."""
        hashes = self._hashes_for_key_id(key_id)
        stamp = format_time(now or SystemClock().now())
        for key_hash in hashes:
            with translated("dynamodb:UpdateItem"):
                self._client.update_item(
                    TableName=self._table,
                    Key={"key_hash": {"S": key_hash}},
                    UpdateExpression="SET disabled = :t, disabled_at = :at",
                    ConditionExpression="attribute_exists(key_hash)",
                    ExpressionAttributeValues={":t": {"BOOL": True}, ":at": {"S": stamp}},
                )
        return bool(hashes)

    def _put(self, key: str, principal: Principal, now: datetime, *, must_be_new: bool) -> None:
        item: dict[str, Any] = {
            "key_hash": {"S": hash_key(key)},
            "key_id": {"S": principal.key_id},
            "tenant_id": {"S": principal.tenant_id},
            "scopes": {"SS": principal.sorted_scopes()},
            "created_at": {"S": format_time(now)},
            "disabled": {"BOOL": False},
        }
        if principal.name is not None:
            item["name"] = {"S": principal.name}
        condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(key_hash)"} if must_be_new else {}
        try:
            self._client.put_item(TableName=self._table, Item=item, **condition)
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise ConflictError("This API key already exists", {"key_id": principal.key_id}) from exc
            with translated("dynamodb:PutItem"):
                raise

    def _hashes_for_key_id(self, key_id: str) -> list[str]:
        hashes: list[str] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "FilterExpression": "key_id = :k",
            "ProjectionExpression": "key_hash",
            "ExpressionAttributeValues": {":k": {"S": key_id}},
        }
        while True:
            with translated("dynamodb:Scan"):
                page = self._client.scan(**kwargs)
            hashes += [item["key_hash"]["S"] for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return hashes
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _principal(item: dict[str, Any], key_id: str) -> Principal:
    try:
        return Principal(
            key_id=item["key_id"]["S"],
            tenant_id=item["tenant_id"]["S"],
            scopes=frozenset(item["scopes"]["SS"]),
            name=item["name"]["S"] if "name" in item else None,
        )
    except (KeyError, ValidationError) as exc:
        raise ProviderError("The stored API key record is malformed", {"key_id": key_id}) from exc
