"""ScheduledRolloutFunction: a schedule fired; start its rollout.

Event: the schedule's target Input after EventBridge Scheduler filled in its context
attributes (`domain.schedules.ScheduleFiring`; sample in `events/schedule_firing.json`).
Scheduler invokes asynchronously and may deliver a firing more than once: the rollout id
comes from the schedule and the scheduled time, so a repeat answers the same rollout.

A firing that can never succeed (a malformed Input, an invalid rollout) is answered with the
error envelope and logged, not raised: retrying it would only repeat the refusal. Errors a
retry may fix (throttling, AWS unavailable) are raised, so Lambda's async retries and then the
on-failure destination (the schedules' dead-letter queue) take over.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import ValidationError, parse
from aws_lambda_powertools.utilities.typing import LambdaContext

from restarter.domain.errors import RequestValidationError, RestarterError, TransientProviderError
from restarter.domain.rollouts import summarize
from restarter.domain.schedules import ScheduleFiring
from restarter.domain.validation import validation_details
from restarter.observability import logger, metrics
from restarter.services.schedules import start_scheduled_rollout
from restarter.wiring import get_rollout_dependencies


def _refused(exc: RestarterError) -> dict[str, Any]:
    logger.error("scheduled firing refused", error_code=exc.code, error=exc.message)
    metrics.add_metric(name="ScheduledFiringsRefused", unit=MetricUnit.Count, value=1)
    return exc.to_envelope()


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        firing = parse(event=event, model=ScheduleFiring)
    except ValidationError as exc:
        errors = validation_details(exc)
        fields = ", ".join(sorted({e["field"] for e in errors}))
        return _refused(RequestValidationError(f"Invalid schedule firing: {fields}", {"errors": errors}))
    except RestarterError as exc:  # the rollout's restart request itself is invalid
        return _refused(exc)
    logger.append_keys(schedule=firing.schedule_name, scheduled_time=firing.scheduled_time.isoformat())
    try:
        record, created = start_scheduled_rollout(get_rollout_dependencies(), firing)
    except TransientProviderError:
        raise
    except RestarterError as exc:
        return _refused(exc)
    metrics.add_metric(
        name="ScheduledRolloutsStarted" if created else "ScheduledFiringsRepeated", unit=MetricUnit.Count, value=1
    )
    summary = summarize(record)
    return {
        "success": True,
        "data": {
            "rollout_id": record.rollout_id,
            "started": created,
            "maintenance_window": summary["maintenance_window"],
            "total_clusters": summary["total_clusters"],
            "clusters": [r.cluster_id for r in record.results],
        },
    }
