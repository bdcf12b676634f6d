"""The IdempotencyTable, as Powertools idempotency persistence layers over one DynamoDB client.

Powertools configures a persistence layer on its first use only (with the config of the guard
that used it), so guards never share one: each guard asks for its own by name, and gets the same
layer on every call of the container. Powertools' idempotency package is imported on first use:
functions that never guard anything do not pay for it on a cold start.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
    from mypy_boto3_dynamodb import DynamoDBClient


class IdempotencyTable:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self.table = table
        self._layers: dict[str, DynamoDBPersistenceLayer] = {}
        self._lock = threading.Lock()

    def persistence_layer(self, guard: str) -> DynamoDBPersistenceLayer:
        """The layer of one guard (by its key prefix), made on first use."""
        from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

        with self._lock:
            layer = self._layers.get(guard)
            if layer is None:
                layer = DynamoDBPersistenceLayer(table_name=self.table, boto3_client=self._client)
                self._layers[guard] = layer
            return layer
