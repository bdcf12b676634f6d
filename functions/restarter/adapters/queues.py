"""SQS: when a message that failed comes back (its visibility timeout)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from restarter.adapters.aws_errors import call

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


class MessageVisibility:
    def __init__(self, client: SQSClient) -> None:
        self._client = client

    def delay(self, queue_url: str, receipt_handle: str, seconds: int) -> None:
        call(
            "sqs:ChangeMessageVisibility",
            lambda: self._client.change_message_visibility(
                QueueUrl=queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds
            ),
        )
