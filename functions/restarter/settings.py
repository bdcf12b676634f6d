"""Configuration of every function: one frozen model, read from the environment once, on first use.

Every variable any function's `Environment` in template.yaml sets (its Globals and its own) is a
field here, under its variable's name. A function reads only the fields it needs; a variable a
function does not get keeps its default. A value that is set but wrong fails the first use with
one `SettingsError` naming every bad variable, instead of failing later inside some AWS call.
An empty value counts as unset.

| variable | functions (template.yaml) |
| --- | --- |
| CLUSTERS_TABLE, RESTARTS_TABLE, LOCKS_TABLE, AUDIT_TABLE | all (Globals) |
| API_KEYS_TABLE, IDEMPOTENCY_TABLE, EVENT_BUS_NAME, CLUSTER_TAG_KEY, HEALTH_TABLE | all (Globals) |
| STATE_MACHINE_ARN | all but RestartStep and ApiKeyAuthorizer |
| API_WAIT_BUDGET_SECONDS, SCHEDULE_TARGET_ARN, SCHEDULER_ROLE_ARN, SCHEDULE_DEAD_LETTER_ARN | Api |
| ROLLOUTS_TABLE | Api, QueueRestart, RolloutStep, ScheduledRollout |
| ROLLOUT_STATE_MACHINE_ARN | Api, QueueRestart, ScheduledRollout |
| RECOVERY_TABLE | AlarmRecovery, Api, RestartExecutionEnded |
| RECOVERY_BREAKER_SHARE, RECOVERY_BREAKER_MIN_CLUSTERS | AlarmRecovery, Api, RestartExecutionEnded |
| RECOVERY_BREAKER_WINDOW_MINUTES | AlarmRecovery, Api, RestartExecutionEnded |
| RESTART_STEP_ROLE_ARN | Api |
| AWS_REGION (else AWS_DEFAULT_REGION) | all (set by Lambda) |

POWERTOOLS_* and LOG_LEVEL are read by Powertools itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

TableName = Annotated[str, Field(min_length=3, max_length=255, pattern=r"^[A-Za-z0-9_.-]+$")]
Arn = Annotated[str, Field(pattern=r"^arn:aws[a-z-]*:[a-z0-9-]+:")]


class SettingsError(RuntimeError):
    """The environment is not what the function needs; the message names each variable."""


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", validate_by_name=True, validate_by_alias=True)

    clusters_table: TableName = Field(default="restarter-clusters", validation_alias="CLUSTERS_TABLE")
    restarts_table: TableName = Field(default="restarter-restarts", validation_alias="RESTARTS_TABLE")
    locks_table: TableName = Field(default="restarter-locks", validation_alias="LOCKS_TABLE")
    audit_table: TableName = Field(default="restarter-audit", validation_alias="AUDIT_TABLE")
    api_keys_table: TableName = Field(default="restarter-api-keys", validation_alias="API_KEYS_TABLE")
    idempotency_table: TableName = Field(default="restarter-idempotency", validation_alias="IDEMPOTENCY_TABLE")
    event_bus_name: str = Field(default="restarter", min_length=1, max_length=1600, validation_alias="EVENT_BUS_NAME")
    cluster_tag_key: str = Field(
        default="restarter:cluster", min_length=1, max_length=128, validation_alias="CLUSTER_TAG_KEY"
    )
    state_machine_arn: Arn | None = Field(default=None, validation_alias="STATE_MACHINE_ARN")
    # API Gateway answers 504 after 29 s: a synchronous wait must end before that.
    api_wait_budget_seconds: float = Field(default=25.0, gt=0, le=29, validation_alias="API_WAIT_BUDGET_SECONDS")
    rollouts_table: TableName = Field(default="restarter-rollouts", validation_alias="ROLLOUTS_TABLE")
    rollout_state_machine_arn: Arn | None = Field(default=None, validation_alias="ROLLOUT_STATE_MACHINE_ARN")
    schedule_target_arn: Arn | None = Field(default=None, validation_alias="SCHEDULE_TARGET_ARN")
    scheduler_role_arn: Arn | None = Field(default=None, validation_alias="SCHEDULER_ROLE_ARN")
    schedule_dead_letter_arn: Arn | None = Field(default=None, validation_alias="SCHEDULE_DEAD_LETTER_ARN")
    recovery_table: TableName = Field(default="restarter-recovery", validation_alias="RECOVERY_TABLE")
    health_table: TableName = Field(default="restarter-health", validation_alias="HEALTH_TABLE")
    # the role the restart steps run as: GET /v1/diagnostics asks IAM what it may do
    restart_step_role_arn: Arn | None = Field(default=None, validation_alias="RESTART_STEP_ROLE_ARN")
    # the fleet circuit breaker of alarm recovery (restarter.domain.circuit_breaker)
    breaker_share: float = Field(default=0.2, gt=0, le=1, validation_alias="RECOVERY_BREAKER_SHARE")
    breaker_min_clusters: int = Field(default=2, ge=1, le=10_000, validation_alias="RECOVERY_BREAKER_MIN_CLUSTERS")
    breaker_window_minutes: int = Field(default=10, ge=1, le=1440, validation_alias="RECOVERY_BREAKER_WINDOW_MINUTES")
    region: str = Field(
        default="us-east-1",
        pattern=r"^[a-z]{2}(-[a-z]+)+-\d$",
        validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"),
    )

    @classmethod
    def variables(cls) -> list[str]:
        """Every environment variable the settings read."""
        names: list[str] = []
        for field in cls.model_fields.values():
            alias = field.validation_alias
            names += [str(c) for c in alias.choices] if isinstance(alias, AliasChoices) else [str(alias)]
        return names

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings `env` (default: the process environment) gives; `SettingsError` if any value is wrong."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name in cls.variables():
            value = (env.get(name) or "").strip()
            if value:
                values[name] = value
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            # names and reasons only: the values stay out of the message (and of the chained error)
            problems = "; ".join(f"{error['loc'][0]}: {error['msg']}" for error in exc.errors() if error["loc"])
            raise SettingsError(f"Invalid environment: {problems}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Read once per container, on first use (never at import)."""
    return Settings.from_environment()
