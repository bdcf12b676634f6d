"""RestartStepFunction: the state machine's worker. One call = one step of one phase."""

from __future__ import annotations

from typing import Any, Literal

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from restarter.domain.models import Phase
from restarter.observability import logger, metrics
from restarter.services.restart.runner import RestartRunner
from restarter.wiring import get_dependencies


class RestartStepEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    action: Literal["advance", "cleanup", "abandon"]
    restart_id: str = Field(pattern=r"^rst_[a-z0-9]+$")
    phase: Phase | None = None
    attempt: int = Field(default=0, ge=0)
    error: dict[str, Any] = Field(default_factory=dict)


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
@event_parser(model=RestartStepEvent)
def lambda_handler(event: RestartStepEvent, context: LambdaContext) -> dict[str, Any]:
    logger.append_keys(restart_id=event.restart_id, action=event.action, phase=event.phase)
    runner = RestartRunner(get_dependencies())
    if event.action == "advance":
        if event.phase is None:
            raise ValueError("advance needs a phase")
        return runner.advance(event.restart_id, event.phase, event.attempt).to_output()
    if event.action == "cleanup":
        return runner.cleanup(event.restart_id, event.error, event.attempt).to_output()
    return runner.abandon(event.restart_id, event.error).to_output()
