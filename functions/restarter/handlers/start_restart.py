"""StartRestartFunction: start one restart from a direct invocation (CLI, other services).

Event: `{"cluster_id": "...", "request": {<the seed's body>}, "requested_by": "...",
"trigger": "cli"}`. Answers the restart record, or the seed's error envelope; an event of
the wrong shape too (parsed here rather than by Powertools' `event_parser`, whose error would
quote the submitted values, `environment_updates` secrets included, back to the caller and the logs).
"""

from __future__ import annotations

from typing import Any, Literal

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from restarter.domain.errors import RequestValidationError, RestarterError
from restarter.domain.validation import validation_details
from restarter.observability import logger, metrics
from restarter.services.restart_intake import accept_restart
from restarter.wiring import get_dependencies


class StartRestartEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cluster_id: str = Field(min_length=1, max_length=128)
    request: Any = None
    requested_by: str = Field(default="unknown", max_length=200)
    trigger: Literal["api", "schedule", "alarm", "queue", "cli"] = "cli"


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(raw_event: Any, context: LambdaContext) -> dict[str, Any]:
    try:
        event = StartRestartEvent.model_validate(raw_event)
    except ValidationError as exc:
        errors = validation_details(exc)
        fields = ", ".join(sorted({e["field"] for e in errors}))
        logger.info("restart refused", error_code="VALIDATION_ERROR", fields=fields)
        metrics.add_metric(name="RestartsRefused", unit=MetricUnit.Count, value=1)
        return RequestValidationError(
            f"Invalid event: {fields} (the restart request goes under `request`)", {"errors": errors}
        ).to_envelope()
    logger.append_keys(cluster_id=event.cluster_id, trigger=event.trigger)
    try:
        record = accept_restart(
            get_dependencies(),
            event.cluster_id,
            event.request,
            trigger=event.trigger,
            requested_by=event.requested_by,
        )
    except RestarterError as exc:
        logger.info("restart refused", error_code=exc.code)
        metrics.add_metric(name="RestartsRefused", unit=MetricUnit.Count, value=1)
        return exc.to_envelope()
    metrics.add_metric(name="RestartsAccepted", unit=MetricUnit.Count, value=1)
    return {"success": True, "data": record.model_dump(mode="json", exclude={"phase_state"})}
