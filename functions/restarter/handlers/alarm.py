"""AlarmRecoveryFunction: recover a cluster when one of its CloudWatch alarms goes into ALARM.

Event: the EventBridge "CloudWatch Alarm State Change" event (source `aws.cloudwatch`).
Powertools Parser has no model for its `detail`, so it is modelled here. Only a transition
into ALARM acts; every event is answered without error unless something a retry may fix went
wrong. Answer: `{"success": true, "data": {"action": ..., ...}}`.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from restarter.domain.recovery import AlarmTransition
from restarter.observability import logger, metrics
from restarter.services.alarm_recovery import AlarmRecovery, build_alarm_recovery, recover_from_alarm
from restarter.services.dependencies import Dependencies, get_dependencies


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class AlarmState(_Lenient):
    value: str
    reason: str | None = None
    timestamp: str | None = None


class AlarmMetricDescription(_Lenient):
    namespace: str | None = None
    name: str | None = None
    dimensions: dict[str, str] = Field(default_factory=dict)


class AlarmMetricStat(_Lenient):
    metric: AlarmMetricDescription
    period: int | None = None
    stat: str | None = None


class AlarmMetric(_Lenient):
    id: str | None = None
    metric_stat: AlarmMetricStat | None = Field(default=None, alias="metricStat")
    expression: str | None = None
    return_data: bool | None = Field(default=None, alias="returnData")


class AlarmConfiguration(_Lenient):
    description: str | None = None
    metrics: list[AlarmMetric] = Field(default_factory=list)
    # composite alarms carry a rule instead of metrics
    alarm_rule: str | None = Field(default=None, alias="alarmRule")


class AlarmStateChangeDetail(_Lenient):
    alarm_name: str = Field(alias="alarmName", min_length=1, max_length=255)
    state: AlarmState
    previous_state: AlarmState | None = Field(default=None, alias="previousState")
    configuration: AlarmConfiguration | None = None


class AlarmStateChangeEvent(EventBridgeModel):
    detail: AlarmStateChangeDetail  # type: ignore[assignment]

    def to_transition(self) -> AlarmTransition:
        detail = self.detail
        metrics_ = detail.configuration.metrics if detail.configuration else []
        return AlarmTransition(
            event_id=self.id,
            alarm_name=detail.alarm_name,
            alarm_arn=next((r for r in self.resources if ":alarm:" in r), None),
            state=detail.state.value,
            previous_state=detail.previous_state.value if detail.previous_state else None,
            reason=detail.state.reason,
            dimensions=tuple(m.metric_stat.metric.dimensions for m in metrics_ if m.metric_stat is not None),
        )


_service: tuple[Dependencies, AlarmRecovery] | None = None


def _alarm_recovery() -> AlarmRecovery:
    """Built on first use, and again when the shared dependencies are replaced (local runtime)."""
    global _service  # noqa: PLW0603 - one set per container
    deps = get_dependencies()
    if _service is None or _service[0] is not deps:
        _service = (deps, build_alarm_recovery(deps))
    return _service[1]


def use_alarm_recovery(service: AlarmRecovery | None) -> None:
    """Install a set (tests, the local runtime); None rebuilds on next use."""
    global _service  # noqa: PLW0603
    _service = (service.deps, service) if service is not None else None


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
@event_parser(model=AlarmStateChangeEvent)
def lambda_handler(event: AlarmStateChangeEvent, context: LambdaContext) -> dict[str, Any]:
    alarm = event.to_transition()
    logger.append_keys(alarm_name=alarm.alarm_name, event_id=alarm.event_id)
    outcome = recover_from_alarm(_alarm_recovery(), alarm)
    metrics.add_metric(name="Alarm" + outcome.action.title().replace("_", ""), unit=MetricUnit.Count, value=1)
    return {"success": True, "data": outcome.to_dict()}
