"""SQS: when a message that failed comes back (its visibility timeout)."""

from __future__ import annotations

from typing import Any

from restarter.adapters.aws_errors import call


class MessageVisibility:
    def __init__(self, client: Any) -> None:
        self._client = client

    def delay(self, queue_url: str, receipt_handle: str, seconds: int) -> None:
        call(
            "sqs:ChangeMessageVisibility",
            lambda: self._client.change_message_visibility(
                QueueUrl=queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds
            ),
        )
