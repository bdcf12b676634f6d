"""DynamoDB persistence for rollout records (table `RolloutsTable`, key `rollout_id`).

Like the restart store: the record is stored whole as JSON in `body`, every write is guarded
by a `version` condition. Per-item results go through `update` (`store.update_record`), a read-modify-write retried
on a lost race, so concurrent Map items never overwrite each other's results: the record is the
rollout's shared counter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from restarter.adapters.store import VersionedRecords, update_record
from restarter.domain.rollouts import RolloutRecord

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class RolloutStore:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._records = VersionedRecords(client, table, "rollout_id", "rollout")

    def get(self, rollout_id: str) -> tuple[RolloutRecord, int] | None:
        stored = self._records.get(rollout_id)
        if stored is None:
            return None
        return RolloutRecord.model_validate_json(stored[0]), stored[1]

    def put(self, record: RolloutRecord, expected_version: int | None) -> int:
        """Write the record; `expected_version=None` means it must not exist yet."""
        index = {"status": record.status}
        return self._records.put(record.rollout_id, record.model_dump_json(), index, expected_version)

    def update(self, rollout_id: str, change: Callable[[RolloutRecord], None]) -> RolloutRecord:
        return update_record(self, rollout_id, "rollout", change)
