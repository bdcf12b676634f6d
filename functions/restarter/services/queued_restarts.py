"""Restarts requested through SQS: one message = one restart request (or a rollout spec).

Each message goes through two idempotency guards (Powertools idempotency, IdempotencyTable):

1. the SQS message id: a redelivery of the same message (standard queues deliver at least
   once; a batch retried after a timeout) answers the first delivery's result;
2. a business key: the message's `idempotency_key` (message attribute or body field; reused
   with another request it is refused, CONFLICT) or, without one, the hash of
   `{cluster_id, request}` within `CONTENT_DEDUP_WINDOW_SECONDS`: two producers asking for
   the same restart of the same cluster start it once.

A failed message raises `QueuedMessageError`, which the batch processor reports in
`batchItemFailures`, so only that message returns to the queue. What happens next depends on
whether a retry can ever succeed:

- permanent (`permanent=True`): malformed JSON, invalid fields (VALIDATION_ERROR), unknown
  cluster (NOT_FOUND), provider refusals (PROVIDER_ERROR), an idempotency key reused with
  another request (CONFLICT), an invalid rollout spec. The message is made
  visible again at once (`ChangeMessageVisibility` 0), so it uses up the queue's
  `maxReceiveCount` within seconds and lands in the dead-letter queue instead of coming back
  for hours;
- transient (everything else): the cluster is busy (INVALID_STATE: a restart in flight or a
  transitional state), PROVIDER_BUSY, a message being processed by another consumer, AWS
  errors. The message comes back after an exponential backoff on its receive count
  (`TRANSIENT_BACKOFF_*`), so a busy cluster is retried after its restart is likely done;
  the queue's `maxReceiveCount` (20 in the template: ~80 minutes of backoff, longer than the
  longest restart, 60 minutes) bounds it, after which it lands in the DLQ too.

Changing the visibility is best effort: if it fails, the failure report alone still returns
the message after the queue's visibility timeout.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from restarter.adapters.idempotency import IdempotencyTable
from restarter.domain.errors import NotFoundError, ProviderError, RequestValidationError, RestarterError
from restarter.domain.queue_messages import (
    RestartMessage,
    RolloutMessage,
    parse_queue_message,
)
from restarter.domain.rollouts import RolloutSpec, rollout_id_for_key
from restarter.domain.validation import validation_details
from restarter.observability import logger
from restarter.services.restart_intake import accept_restart
from restarter.services.rollouts import create_rollout
from restarter.wiring import Dependencies, QueueDependencies

MESSAGE_ID_TTL_SECONDS = 24 * 3600
IDEMPOTENCY_KEY_TTL_SECONDS = 24 * 3600
CONTENT_DEDUP_WINDOW_SECONDS = 3600
TRANSIENT_BACKOFF_BASE_SECONDS = 30
TRANSIENT_BACKOFF_MAX_SECONDS = 300

# Errors a retry can never fix; anything else is treated as transient.
PERMANENT_ERRORS: tuple[type[Exception], ...] = (RequestValidationError, NotFoundError, ProviderError)


@dataclass(frozen=True)
class QueuedMessage:
    """One SQS message, as the handler read it from the event."""

    message_id: str
    body: str
    queue_name: str
    queue_url: str
    receipt_handle: str
    receive_count: int = 1
    attributes: Mapping[str, str] = field(default_factory=dict)  # string message attributes

    @property
    def requested_by(self) -> str:
        return f"queue:{self.queue_name}"


class QueuedMessageError(RestarterError):
    """A message that goes back to the queue; `permanent` says whether a retry can ever succeed."""

    def __init__(
        self,
        reason: str,
        *,
        code: str,
        permanent: bool,
        cluster_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(reason, details)
        self.code = code
        self.permanent = permanent
        self.reason = reason
        self.cluster_id = cluster_id


def process_message(
    queue: QueueDependencies, message: QueuedMessage, lambda_context: LambdaContext | None = None
) -> dict[str, Any]:
    """Start the restart a message asks for, once. Raises `QueuedMessageError` when it failed."""
    guards = _guards(queue.idempotency)
    if lambda_context is not None:
        for config in guards.configs:  # an in-progress record expires with this invocation
            config.register_lambda_context(lambda_context)
    try:
        result: dict[str, Any] = guards.by_message(
            envelope={"message_id": message.message_id, "queue": message.queue_name},
            message=message,
            queue=queue,
        )
    except Exception as exc:
        failure = classify(exc)
        _report(queue, message, failure)
        if failure is exc:
            raise
        raise failure from exc
    logger.info("queued restart started", message_id=message.message_id, **result)
    return result


def classify(exc: Exception) -> QueuedMessageError:
    """The failure to report for an exception: permanent or transient (see the module doc)."""
    if isinstance(exc, QueuedMessageError):
        return exc
    if isinstance(exc, IdempotencyValidationError):
        return QueuedMessageError(
            "This idempotency_key was used with a different request", code="CONFLICT", permanent=True
        )
    if isinstance(exc, IdempotencyAlreadyInProgressError):
        return QueuedMessageError(
            "The same message or request is being processed by another consumer", code="IN_PROGRESS", permanent=False
        )
    if isinstance(exc, RestarterError):
        cluster_id = exc.details.get("cluster_id") if isinstance(exc.details, dict) else None
        return QueuedMessageError(
            exc.message,
            code=exc.code,
            permanent=isinstance(exc, PERMANENT_ERRORS),
            cluster_id=cluster_id if isinstance(cluster_id, str) else None,
            details=exc.details,
        )
    return QueuedMessageError(f"Unexpected error: {type(exc).__name__}", code="INTERNAL", permanent=False)


def retry_delay_seconds(failure: QueuedMessageError, receive_count: int) -> int:
    """How long the message stays invisible before its next delivery."""
    if failure.permanent:
        return 0
    exponent = max(0, min(receive_count, 16) - 1)
    return int(min(TRANSIENT_BACKOFF_BASE_SECONDS * 2**exponent, TRANSIENT_BACKOFF_MAX_SECONDS))


# ------------------------------------------------------------------ the guarded steps


def _handle_message(*, envelope: dict[str, Any], message: QueuedMessage, queue: QueueDependencies) -> dict[str, Any]:
    """Inside the message-id guard: parse, then start the restart (business-key guard) or the rollout."""
    parsed = parse_queue_message(
        message.body,
        priority=message.attributes.get("priority"),
        idempotency_key=message.attributes.get("idempotency_key"),
    )
    if isinstance(parsed, RolloutMessage):
        return _start_rollout_once(queue, message, parsed)
    return _start_once(queue, message, parsed)


def _start_rollout_once(queue: QueueDependencies, message: QueuedMessage, parsed: RolloutMessage) -> dict[str, Any]:
    """An operator's rollout (every tenant's clusters), named by its business key: a second
    message with the same key or the same spec answers the rollout the first one started."""
    try:
        spec = RolloutSpec.model_validate(parsed.rollout)
    except ValidationError as exc:
        errors = [{**e, "field": f"rollout.{e['field']}"} for e in validation_details(exc)]
        raise RequestValidationError("Invalid rollout", {"errors": errors}) from exc
    record, created = create_rollout(
        queue.rollouts,
        spec,
        requested_by=message.requested_by,
        trigger="queue",
        rollout_id=rollout_id_for_key(parsed.business_key()),
    )
    return {
        "rollout_id": record.rollout_id,
        "started": created,
        "total_clusters": len(record.results),
        "priority": parsed.priority,
    }


def _start_once(queue: QueueDependencies, message: QueuedMessage, parsed: RestartMessage) -> dict[str, Any]:
    guards = _guards(queue.idempotency)
    command: dict[str, Any] = {
        "cluster_id": parsed.cluster_id,
        "request": parsed.request,
        "requested_by": message.requested_by,
        "priority": parsed.priority,
    }
    if parsed.idempotency_key is not None:
        command["idempotency_key"] = parsed.idempotency_key
        result: dict[str, Any] = guards.by_key(command=command, deps=queue.deps)
    else:
        result = guards.by_content(command=command, deps=queue.deps)
    return result


def _start_restart(*, command: dict[str, Any], deps: Dependencies) -> dict[str, Any]:
    record = accept_restart(
        deps,
        command["cluster_id"],
        command["request"],
        trigger="queue",
        requested_by=command["requested_by"],
    )
    return {
        "cluster_id": record.cluster_id,
        "restart_id": record.id,
        "execution_arn": record.execution_arn,
        "priority": command["priority"],
    }


@dataclass(frozen=True)
class _Guards:
    by_message: Any
    by_key: Any
    by_content: Any
    configs: tuple[IdempotencyConfig, ...]


MESSAGE_GUARD = "restarter.queue.message"
KEY_GUARD = "restarter.queue.idempotency_key"
CONTENT_GUARD = "restarter.queue.request"


@lru_cache(maxsize=4)
def _guards(idempotency: IdempotencyTable) -> _Guards:
    """Built once per table adapter (once per container), on first use. Each guard has its own
    persistence layer: Powertools configures a layer on first use, and the guards nest."""
    by_message = IdempotencyConfig(event_key_jmespath="message_id", expires_after_seconds=MESSAGE_ID_TTL_SECONDS)
    by_key = IdempotencyConfig(
        event_key_jmespath="idempotency_key",
        payload_validation_jmespath="[cluster_id, request]",
        raise_on_no_idempotency_key=True,
        expires_after_seconds=IDEMPOTENCY_KEY_TTL_SECONDS,
    )
    by_content = IdempotencyConfig(
        event_key_jmespath="[cluster_id, request]",
        raise_on_no_idempotency_key=True,
        expires_after_seconds=CONTENT_DEDUP_WINDOW_SECONDS,
    )
    return _Guards(
        by_message=idempotent_function(
            _handle_message,
            data_keyword_argument="envelope",
            persistence_store=idempotency.persistence_layer(MESSAGE_GUARD),
            config=by_message,
            key_prefix=MESSAGE_GUARD,
        ),
        by_key=idempotent_function(
            _start_restart,
            data_keyword_argument="command",
            persistence_store=idempotency.persistence_layer(KEY_GUARD),
            config=by_key,
            key_prefix=KEY_GUARD,
        ),
        by_content=idempotent_function(
            _start_restart,
            data_keyword_argument="command",
            persistence_store=idempotency.persistence_layer(CONTENT_GUARD),
            config=by_content,
            key_prefix=CONTENT_GUARD,
        ),
        configs=(by_message, by_key, by_content),
    )


# ------------------------------------------------------------------ failures


def _report(queue: QueueDependencies, message: QueuedMessage, failure: QueuedMessageError) -> None:
    delay = retry_delay_seconds(failure, message.receive_count)
    fields: dict[str, Any] = {
        "message_id": message.message_id,
        "queue": message.queue_name,
        "cluster_id": failure.cluster_id,
        "error_code": failure.code,
        "reason": failure.reason,
        "failure": "permanent" if failure.permanent else "transient",
        "receive_count": message.receive_count,
        "visible_again_in_seconds": delay,
    }
    if failure.permanent:
        logger.error("queued message refused; it will end in the dead-letter queue", **fields)
    else:
        logger.warning("queued message failed; it will be retried", **fields)
    _change_visibility(queue, message, delay)


def _change_visibility(queue: QueueDependencies, message: QueuedMessage, seconds: int) -> None:
    try:
        queue.visibility.delay(message.queue_url, message.receipt_handle, seconds)
    except Exception as exc:  # best effort: the failure report alone returns the message
        logger.warning(
            "could not change the message's visibility",
            message_id=message.message_id,
            error_type=type(exc).__name__,
        )
