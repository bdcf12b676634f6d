"""RolloutStepFunction: the rollout state machine's worker. One call = one step of one item."""

from __future__ import annotations

import json
from typing import Any, Literal

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field, model_validator

from restarter.domain.rollouts import ROLLOUT_ID_PATTERN
from restarter.observability import logger, metrics
from restarter.services import rollouts
from restarter.wiring import get_rollout_dependencies


class RolloutStepEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    action: Literal["start_item", "poll_item", "finish_item", "fail_item", "finish"]
    rollout_id: str = Field(pattern=ROLLOUT_ID_PATTERN)
    cluster_id: str | None = Field(default=None, min_length=1)
    restart_id: str | None = Field(default=None, pattern=r"^rst_[a-z0-9]+$")
    error: dict[str, Any] = Field(default_factory=dict)  # fail_item: the Step Functions error caught
    # poll_item: how many polls of this item's restart came before (its backoff)
    polls: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _needs(self) -> RolloutStepEvent:
        if self.action != "finish" and self.cluster_id is None:
            raise ValueError(f"{self.action} needs a cluster_id")
        if self.action in ("poll_item", "finish_item") and self.restart_id is None:
            raise ValueError(f"{self.action} needs a restart_id")
        return self


def step_functions_error_message(error: dict[str, Any]) -> str:
    """The message of a Step Functions error (`Cause` holds the Lambda's error as JSON)."""
    name = str(error.get("Error", "Error"))
    cause = error.get("Cause")
    if isinstance(cause, str):
        try:
            parsed = json.loads(cause)
        except ValueError:
            return f"{name}: {cause}"[:500]
        if isinstance(parsed, dict) and parsed.get("errorMessage"):
            return f"{parsed.get('errorType', name)}: {parsed['errorMessage']}"[:500]
    return name


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
@event_parser(model=RolloutStepEvent)
def lambda_handler(event: RolloutStepEvent, context: LambdaContext) -> dict[str, Any]:
    logger.append_keys(rollout_id=event.rollout_id, action=event.action, cluster_id=event.cluster_id)
    rd = get_rollout_dependencies()
    cluster_id = event.cluster_id or ""
    restart_id = event.restart_id or ""
    if event.action == "start_item":
        return rollouts.start_item(rd, event.rollout_id, cluster_id)
    if event.action == "poll_item":
        return rollouts.poll_item(rd, event.rollout_id, cluster_id, restart_id, event.polls)
    if event.action == "finish_item":
        return rollouts.finish_item(rd, event.rollout_id, cluster_id, restart_id)
    if event.action == "fail_item":
        return rollouts.fail_item(rd, event.rollout_id, cluster_id, step_functions_error_message(event.error))
    return rollouts.finish(rd, event.rollout_id)
