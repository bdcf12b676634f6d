"""QueueRestartFunction: restart requests from SQS (recovery and maintenance queues, each with a DLQ).

Event: a standard SQS event; each body is `{"cluster_id": "...", <the seed's request fields>}`
or a rollout, `{"rollout": {<a rollout spec>}}` (an operator's rollout over every tenant's
clusters, started once per idempotency key or spec). Powertools batch processing
answers `{"batchItemFailures": [...]}` so only failed messages return to the queue
(`FunctionResponseTypes: [ReportBatchItemFailures]`). Within a batch, messages whose
`priority` attribute is `recovery` are processed before `maintenance` ones.
What is retried and what ends in the DLQ: see `restarter.services.queued_restarts`.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from restarter.domain.queue_messages import MalformedMessageError, priority_rank
from restarter.observability import logger, metrics
from restarter.services.queued_restarts import QueuedMessage, process_message
from restarter.wiring import get_queue_dependencies

# Every failure is reported per message, even when the whole batch failed (no Lambda error).
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def by_priority(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Recovery messages first; the order of the queue otherwise (a stable sort)."""

    def rank(record: dict[str, Any]) -> int:
        attribute = (record.get("messageAttributes") or {}).get("priority") or {}
        return priority_rank(attribute.get("stringValue"))

    return sorted(records, key=rank)


def queue_name_from_arn(arn: str) -> str:
    """`arn:aws:sqs:us-east-1:123456789012:restarter-dev-recovery` -> `restarter-dev-recovery`."""
    parts = arn.split(":")
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "sqs" or not parts[5]:
        raise MalformedMessageError(
            "Invalid queue message: eventSourceARN",
            {"errors": [{"field": "eventSourceARN", "message": "expected an SQS queue ARN", "type": "value_error"}]},
        )
    return parts[5]


def queued_message(record: SQSRecord) -> QueuedMessage:
    return QueuedMessage(
        message_id=record.message_id,
        body=record.body,
        queue_name=queue_name_from_arn(record.event_source_arn),
        queue_url=record.queue_url,
        receipt_handle=record.receipt_handle,
        receive_count=int(record.attributes.approximate_receive_count or 1),
        attributes={
            name: attribute.string_value
            for name, attribute in record.message_attributes.items()
            if attribute is not None and attribute.string_value is not None
        },
    )


def record_handler(record: SQSRecord, lambda_context: LambdaContext | None = None) -> dict[str, Any]:
    return process_message(get_queue_dependencies(), queued_message(record), lambda_context)


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True, log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    ordered = {**event, "Records": by_priority(list(event.get("Records") or []))}
    response = process_partial_response(
        event=ordered, record_handler=record_handler, processor=processor, context=context
    )
    failed = len(response["batchItemFailures"])
    metrics.add_metric(name="QueueMessagesFailed", unit="Count", value=failed)
    metrics.add_metric(name="QueueMessagesProcessed", unit="Count", value=len(ordered["Records"]) - failed)
    return response
