"""RestartExecutionEndedFunction: finish restarts whose execution ended outside the state machine.

Delivered by an EventBridge rule on "Step Functions Execution Status Change" for the restart
state machine, status FAILED, TIMED_OUT or ABORTED. A restart that the state machine already
concluded (a caught failure ends FAILED too) is left alone; see services/ended_executions.py.
Errors a retry may fix are raised, so that Lambda's asynchronous retries deliver the event again.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from restarter.observability import logger, metrics
from restarter.services.ended_executions import conclude_ended_execution
from restarter.services.node_recovery import continue_after
from restarter.wiring import get_alarm_recovery, get_dependencies


class ExecutionStatusChange(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    execution_arn: str = Field(alias="executionArn")
    state_machine_arn: str = Field(alias="stateMachineArn")
    name: str
    status: str
    error: str | None = None
    cause: str | None = None


class ExecutionStatusChangeEvent(EventBridgeModel):
    detail: ExecutionStatusChange


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
@event_parser(model=ExecutionStatusChangeEvent)
def lambda_handler(event: ExecutionStatusChangeEvent, context: LambdaContext) -> dict[str, Any]:
    detail = event.detail
    logger.append_keys(execution_arn=detail.execution_arn, status=detail.status)
    # The cause of an ABORTED or FAILED execution is free text from whoever stopped it: kept
    # short, and only its error name is logged.
    cause = f"{detail.error}: {detail.cause}"[:300] if detail.error else None
    result = conclude_ended_execution(
        get_dependencies(),
        execution_name=detail.name,
        execution_arn=detail.execution_arn,
        status=detail.status,
        cause=cause,
    )
    logger.info("ended execution handled", error=detail.error, **result)
    return {"success": True, "data": continue_after(get_alarm_recovery(), detail.status, result)}
