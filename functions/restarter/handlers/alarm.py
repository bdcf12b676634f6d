"""AlarmRecoveryFunction: recover a cluster when one of its CloudWatch alarms goes into ALARM.

Events, both with `source: aws.cloudwatch`, told apart by their body:

- the EventBridge "CloudWatch Alarm State Change" event (`detail`);
- the CloudWatch Lambda alarm action, an alarm invoking the function directly (`alarmData`,
  `alarmArn`).

A transition's id is derived from the alarm's ARN and the new state's `timestamp` (a UUIDv5,
see `lambda_action_event_id`), the same for every delivery of one transition by either path,
so that it recovers once (the EventBridge `id` is used only when the ARN or timestamp is missing).

Powertools Parser has no model for either (only a data class, `CloudWatchAlarmEvent`, for the
second), so both are modelled here; `alarmData` has the shape of the EventBridge `detail`.
Anything else is refused by the parser (a pydantic `ValidationError`) as before. Only a
transition into ALARM acts; every event is answered without error unless something a retry
may fix went wrong. Answer: `{"success": true, "data": {"action": ..., ...}}`.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter

from restarter.domain.recovery import AlarmTransition
from restarter.observability import logger, metrics
from restarter.services.alarm_recovery import recover_from_alarm
from restarter.wiring import get_alarm_recovery


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

    def to_transition(self, event_id: str, alarm_arn: str | None) -> AlarmTransition:
        metrics_ = self.configuration.metrics if self.configuration else []
        return AlarmTransition(
            event_id=event_id,
            alarm_name=self.alarm_name,
            alarm_arn=alarm_arn,
            state=self.state.value,
            previous_state=self.previous_state.value if self.previous_state else None,
            reason=self.state.reason,
            dimensions=tuple(m.metric_stat.metric.dimensions for m in metrics_ if m.metric_stat is not None),
        )


class AlarmStateChangeEvent(EventBridgeModel):
    detail: AlarmStateChangeDetail  # type: ignore[assignment]

    def to_transition(self) -> AlarmTransition:
        arn = next((r for r in self.resources if ":alarm:" in r), None)
        # One transition, one id, whichever way it arrives: an alarm that also has this
        # function as its Lambda action reaches it twice, and must recover once.
        timestamp = self.detail.state.timestamp
        event_id = lambda_action_event_id(arn, timestamp) if arn and timestamp else self.id
        return self.detail.to_transition(event_id, arn)


# Ids of Lambda alarm action events: uuid5(this namespace, "<alarm ARN>|<state timestamp>").
LAMBDA_ACTION_EVENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:restarter:alarm-lambda-action")


def lambda_action_event_id(alarm_arn: str, state_timestamp: str) -> str:
    """The stable id of one alarm transition delivered as a Lambda alarm action."""
    return str(uuid.uuid5(LAMBDA_ACTION_EVENT_NAMESPACE, f"{alarm_arn}|{state_timestamp}"))


class AlarmLambdaActionEvent(_Lenient):
    """A CloudWatch alarm invoking the function directly (Lambda alarm action)."""

    source: Literal["aws.cloudwatch"]
    alarm_arn: str = Field(alias="alarmArn", pattern=r"^arn:[\w-]+:cloudwatch:[\w-]+:\d{12}:alarm:.+$")
    account_id: str | None = Field(default=None, alias="accountId")
    region: str | None = None
    # when the alarm changed state; the id falls back to it if the state has no timestamp
    time: str = Field(min_length=1)
    alarm_data: AlarmStateChangeDetail = Field(alias="alarmData")

    def to_transition(self) -> AlarmTransition:
        data = self.alarm_data
        event_id = lambda_action_event_id(self.alarm_arn, data.state.timestamp or self.time)
        return data.to_transition(event_id, self.alarm_arn)


def _delivery(event: Any) -> str:
    """`lambda_action` for a body with `alarmData`; anything else is validated as the EventBridge
    event, so that a malformed event is refused exactly as before."""
    if isinstance(event, AlarmLambdaActionEvent) or (isinstance(event, dict) and "alarmData" in event):
        return "lambda_action"
    return "eventbridge"


AlarmEvent = AlarmStateChangeEvent | AlarmLambdaActionEvent
ALARM_EVENT: TypeAdapter[AlarmEvent] = TypeAdapter(
    Annotated[
        Annotated[AlarmStateChangeEvent, Tag("eventbridge")] | Annotated[AlarmLambdaActionEvent, Tag("lambda_action")],
        Discriminator(_delivery),
    ]
)


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
@event_parser(model=ALARM_EVENT)
def lambda_handler(event: AlarmEvent, context: LambdaContext) -> dict[str, Any]:
    alarm = event.to_transition()
    logger.append_keys(
        alarm_name=alarm.alarm_name,
        event_id=alarm.event_id,
        delivery="lambda_action" if isinstance(event, AlarmLambdaActionEvent) else "eventbridge",
    )
    outcome = recover_from_alarm(get_alarm_recovery(), alarm)
    metrics.add_metric(name="Alarm" + outcome.action.title().replace("_", ""), unit=MetricUnit.Count, value=1)
    return {"success": True, "data": outcome.to_dict()}
