"""Queue messages: what an SQS message body means, as pure rules (no event shapes, no I/O).

A body is one JSON object. Either a restart, `{"cluster_id": "...", <the seed's request fields>}`
(plus an optional `idempotency_key`), or a rollout, `{"rollout": {...}}`. The request fields are
validated by the intake (`parse_restart_request`), which audits refusals; here only the
envelope is checked: JSON, an object, a cluster id, an idempotency key, a priority.

A message's priority (`recovery` | `maintenance`, default `maintenance`) comes from its
`priority` message attribute; recovery work goes ahead of maintenance work in a batch.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from restarter.domain.errors import RequestValidationError

Priority = Literal["recovery", "maintenance"]
PRIORITIES: tuple[Priority, ...] = ("recovery", "maintenance")  # processing order
DEFAULT_PRIORITY: Priority = "maintenance"

CLUSTER_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
MAX_IDEMPOTENCY_KEY_LENGTH = 200


class MalformedMessageError(RequestValidationError):
    """A body that is not a restart or rollout message: retrying it can never succeed."""


class RestartMessage(BaseModel):
    model_config = ConfigDict(frozen=True)

    cluster_id: str
    request: dict[str, Any]
    idempotency_key: str | None = None
    priority: Priority = DEFAULT_PRIORITY


class RolloutMessage(BaseModel):
    model_config = ConfigDict(frozen=True)

    rollout: dict[str, Any]
    idempotency_key: str | None = None
    priority: Priority = DEFAULT_PRIORITY

    def business_key(self) -> str:
        """What names the rollout: the idempotency key, else the spec itself (the same spec
        for the same maintenance window is one rollout, whoever sends it and how often)."""
        if self.idempotency_key is not None:
            return f"key#{self.idempotency_key}"
        return "spec#" + json.dumps(self.rollout, sort_keys=True, separators=(",", ":"))


QueueMessage = RestartMessage | RolloutMessage


def _invalid(field: str, message: str, error_type: str) -> MalformedMessageError:
    return MalformedMessageError(
        f"Invalid queue message: {field}",
        {"errors": [{"field": field, "message": message, "type": error_type}]},
    )


def parse_priority(value: str | None) -> Priority:
    """The `priority` attribute; absent means maintenance, anything unknown is an error."""
    if value is None or not value.strip():
        return DEFAULT_PRIORITY
    normalized = value.strip().lower()
    for priority in PRIORITIES:
        if normalized == priority:
            return priority
    raise _invalid("priority", f"expected one of {', '.join(PRIORITIES)}", "literal_error")


def priority_rank(value: str | None) -> int:
    """Sort key for a batch: recovery first. Lenient: an invalid value sorts as the default
    (the message itself is refused when it is parsed)."""
    try:
        return PRIORITIES.index(parse_priority(value))
    except MalformedMessageError:
        return PRIORITIES.index(DEFAULT_PRIORITY)


def _idempotency_key(from_body: Any, from_attribute: str | None) -> str | None:
    if from_body is not None and not isinstance(from_body, str):
        raise _invalid("idempotency_key", "expected a string", "string_type")
    keys = {key.strip() for key in (from_body, from_attribute) if key is not None and key.strip()}
    if len(keys) > 1:
        raise _invalid("idempotency_key", "the body and the message attribute disagree", "value_error")
    key = keys.pop() if keys else None
    if key is not None and len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise _invalid("idempotency_key", f"at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters", "string_too_long")
    return key


def parse_queue_message(
    body: str,
    *,
    priority: str | None = None,
    idempotency_key: str | None = None,
) -> QueueMessage:
    """A message body (and its `priority` / `idempotency_key` attributes) as a restart or a rollout.

    Raises `MalformedMessageError` (code VALIDATION_ERROR) for anything else.
    """
    try:
        document = json.loads(body)
    except (TypeError, ValueError) as exc:
        raise _invalid("body", "Malformed JSON", "json_invalid") from exc
    if not isinstance(document, dict):
        raise _invalid("body", "expected a JSON object", "model_type")
    level = parse_priority(priority)

    if "rollout" in document:
        if "cluster_id" in document:
            raise _invalid("body", "a message is either a restart (cluster_id) or a rollout, not both", "value_error")
        spec = document["rollout"]
        if not isinstance(spec, dict):
            raise _invalid("rollout", "expected an object", "model_type")
        unknown = sorted(set(document) - {"rollout", "idempotency_key"})
        if unknown:
            raise _invalid(unknown[0], "Extra inputs are not permitted", "extra_forbidden")
        key = _idempotency_key(document.get("idempotency_key"), idempotency_key)
        return RolloutMessage(rollout=spec, idempotency_key=key, priority=level)

    request = dict(document)
    cluster_id = request.pop("cluster_id", None)
    if cluster_id is None:
        raise _invalid("cluster_id", "Field required", "missing")
    if not isinstance(cluster_id, str) or not CLUSTER_ID_PATTERN.match(cluster_id):
        raise _invalid("cluster_id", f"must match {CLUSTER_ID_PATTERN.pattern}", "string_pattern_mismatch")
    key = _idempotency_key(request.pop("idempotency_key", None), idempotency_key)
    return RestartMessage(cluster_id=cluster_id, request=request, idempotency_key=key, priority=level)
